#include "trainer/step_graph.h"

#include "trainer/config.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <string>

namespace liger::trainer {
namespace {

int64_t reserved_bytes(c10::DeviceIndex device) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  return stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}

std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace

StepGraph::StepGraph(const std::function<std::vector<at::Tensor>()>& body, int64_t step)
    : graph_(std::make_unique<at::cuda::CUDAGraph>()) {
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  TORCH_CHECK(stream != c10::cuda::getDefaultCUDAStream(stream.device_index()),
              "StepGraph: capture on a side stream, not the default stream");
  // The eager steps' cached blocks go back to the device: from now on the
  // step's memory is the graph pool's, and it should not sit beside a second copy.
  c10::cuda::CUDACachingAllocator::emptyCache();
  const int64_t reserved_before = reserved_bytes(stream.device_index());
  graph_->capture_begin();
  try {
    outputs_ = body();
  } catch (const std::exception& error) {
    try {
      graph_->capture_end();  // ends the (now invalid) capture; its own error is the same story
    } catch (const std::exception&) {
    }
    throw config::ConfigError("training.cuda_graphs: step " + std::to_string(step) +
                              " could not be captured as a CUDA graph (" +
                              first_line(error.what()) + "); set training.cuda_graphs: false");
  }
  try {
    graph_->capture_end();
  } catch (const std::exception& error) {
    throw config::ConfigError("training.cuda_graphs: step " + std::to_string(step) +
                              " could not be captured as a CUDA graph (" +
                              first_line(error.what()) + "); set training.cuda_graphs: false");
  }
  pool_bytes_ = reserved_bytes(stream.device_index()) - reserved_before;
}

StepGraph::~StepGraph() = default;

void StepGraph::replay() {
  graph_->replay();
}

}  // namespace liger::trainer
