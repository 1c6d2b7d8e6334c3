#include "trainer/distributed/communicator.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef LIGER_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef LIGER_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/ATen.h>

#include <chrono>
#include <sstream>

namespace liger::trainer::distributed {
namespace {

// The first line of an exception message (c10 errors append a stack trace).
std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

[[noreturn]] void rethrow_collective(const char* what, int64_t rank, const std::exception& error) {
  throw CollectiveError(std::string(what) + " failed on rank " + std::to_string(rank) + ": " +
                        first_line(error.what()) +
                        " (another rank has probably stopped or timed out: see its log; "
                        "parallelism.timeout_s bounds the wait)");
}

}  // namespace

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  bool shut_down = false;
};

void PendingCollective::wait() {
  if (!wait_fn_) return;
  auto fn = std::move(wait_fn_);
  wait_fn_ = nullptr;
  fn();
}

Communicator::Communicator(ProcessEnvironment env, std::unique_ptr<Impl> impl,
                           std::optional<config::Backend> backend)
    : env_(std::move(env)), impl_(std::move(impl)), backend_(backend) {}

Communicator::~Communicator() {
  try {
    shutdown();
  } catch (...) {  // never throw from a destructor; the job is ending anyway
  }
}

std::shared_ptr<Communicator> Communicator::create(const ProcessEnvironment& env,
                                                   c10::Device device, config::Backend backend,
                                                   double timeout_s) {
  auto impl = std::make_unique<Impl>();
  if (!env.distributed()) {
    return std::shared_ptr<Communicator>(new Communicator(env, std::move(impl), std::nullopt));
  }
  if (backend == config::Backend::auto_)
    backend = device.is_cuda() ? config::Backend::nccl : config::Backend::gloo;
  if (backend == config::Backend::nccl && !device.is_cuda()) {
    throw std::runtime_error(
        "parallelism.backend = nccl needs training.device = cuda; use gloo (or auto) on cpu");
  }
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));

  // Rendezvous: rank 0 serves the store at MASTER_ADDR:MASTER_PORT, every
  // other rank connects to it (retrying until the timeout).
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(env.master_port);
  store_options.isServer = env.rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(env.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    impl->store = c10::make_intrusive<c10d::PrefixStore>("liger/", tcp);
  } catch (const std::exception& error) {
    throw CollectiveError(
        "rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
        " failed on rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
        ": " + first_line(error.what()) +
        " (check MASTER_ADDR/MASTER_PORT, that rank 0 runs, and that the port is free)");
  }

  if (backend == config::Backend::gloo) {
#ifdef LIGER_WITH_GLOO
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->timeout = timeout;
    // All ranks on one host talk over loopback; across hosts Gloo picks the
    // interface that resolves this host's name.
    const bool one_host = env.local_world_size == env.world_size;
    options->devices.push_back(one_host
                                   ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                   : c10d::ProcessGroupGloo::createDefaultDevice());
    impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
        impl->store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
#else
    throw std::runtime_error(
        "parallelism.backend = gloo: this build has no Gloo (install libgloo-dev "
        "and rebuild; scripts/setup.sh does)");
#endif
  } else {  // nccl
#ifdef LIGER_WITH_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    impl->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        impl->store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
    // Connect now, so that a missing rank shows at start-up, not at step 1.
    impl->backend->eagerConnectSingleDevice(device);
#else
    throw std::runtime_error(
        "parallelism.backend = nccl: this build has no NCCL (build with CUDA)");
#endif
  }
  return std::shared_ptr<Communicator>(new Communicator(env, std::move(impl), backend));
}

void Communicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  if (!impl_->backend) return;
  std::vector<at::Tensor> tensors{tensor};
  c10d::AllreduceOptions options;
  options.reduceOp = op == ReduceOp::max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
  try {
    impl_->backend->allreduce(tensors, options)->wait();
  } catch (const std::exception& error) {
    rethrow_collective("all-reduce", rank(), error);
  }
}

namespace {

// A collective started by `start`, as a PendingCollective whose wait() turns
// a failure into a CollectiveError naming `what` and the rank.
PendingCollective started(const char* what, int64_t rank,
                          const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = start();
  } catch (const std::exception& error) {
    rethrow_collective(what, rank, error);
  }
  return PendingCollective([work, what, rank] {
    try {
      work->wait();
    } catch (const std::exception& error) {
      rethrow_collective(what, rank, error);
    }
  });
}

}  // namespace

PendingCollective Communicator::all_gather(at::Tensor& output, at::Tensor& input) {
  if (!impl_->backend) {
    output.copy_(input);
    return {};
  }
  return started("all-gather", rank(),
                 [&] { return impl_->backend->_allgather_base(output, input); });
}

PendingCollective Communicator::reduce_scatter(at::Tensor& output, at::Tensor& input) {
  if (!impl_->backend) {
    output.copy_(input);
    return {};
  }
  return started("reduce-scatter", rank(),
                 [&] { return impl_->backend->_reduce_scatter_base(output, input); });
}

void Communicator::broadcast(at::Tensor& tensor, int64_t root) {
  if (!impl_->backend) return;
  std::vector<at::Tensor> tensors{tensor};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  try {
    impl_->backend->broadcast(tensors, options)->wait();
  } catch (const std::exception& error) {
    rethrow_collective("broadcast", rank(), error);
  }
}

void Communicator::barrier() {
  if (!impl_->backend) return;
  // A one-element all-reduce read back on the host: every rank has arrived
  // when it returns (a device-side wait alone would not block the host).
  const auto device = backend_ == config::Backend::nccl
                          ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env_.local_rank))
                          : at::Device(at::kCPU);
  at::Tensor token = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(device));
  all_reduce(token);
  (void)token.item<float>();
}

void Communicator::shutdown() {
  if (!impl_->backend || impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->backend->shutdown();
}

}  // namespace liger::trainer::distributed
