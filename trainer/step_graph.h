// One optimizer step captured as a CUDA graph and replayed: the whole step
// (forward, backward, clipping, AdamW) becomes one launch, so the per-kernel
// launch cost and the host's pace stop mattering. The body must read only
// tensors whose addresses stay fixed (the StepRunner's fixed batch buffers, the
// optimizer's device-side step values) and must not synchronise with the host;
// what it allocates comes from the graph's private memory pool and stays
// there (the outputs it returns are rewritten by every replay).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <vector>

namespace at::cuda {
struct CUDAGraph;
}

namespace liger::trainer {

class StepGraph {
 public:
  // Captures `body` on the current CUDA stream (which must not be the default
  // stream). Nothing runs: call replay() to run it. Throws a one-line
  // config::ConfigError naming training.cuda_graphs if capturing fails.
  StepGraph(const std::function<std::vector<at::Tensor>()>& body, int64_t step);
  ~StepGraph();

  void replay();
  // The tensors `body` returned, refilled by each replay.
  const std::vector<at::Tensor>& outputs() const { return outputs_; }
  // Bytes the graph's pool holds (the captured step's working memory).
  int64_t pool_bytes() const { return pool_bytes_; }

 private:
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
  std::vector<at::Tensor> outputs_;
  int64_t pool_bytes_ = 0;
};

}  // namespace liger::trainer
