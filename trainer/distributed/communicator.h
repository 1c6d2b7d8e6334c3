// The process group of a job: c10d's TCPStore for the rendezvous and
// ProcessGroupNCCL (cuda) or ProcessGroupGloo (cpu) for the collectives, the
// engine PyTorch's own distributed training runs on.
//
// A single-process job has a Communicator too (world size 1): every
// collective is then a no-op, so callers need no special case.
#pragma once

#include "trainer/config_enums.h"
#include "trainer/distributed/environment.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace liger::trainer::distributed {

// A collective in flight. wait(): on cuda the current stream waits for it (the
// host does not block); on cpu the host blocks until it is done.
class PendingCollective {
 public:
  PendingCollective() = default;
  explicit PendingCollective(std::function<void()> wait_fn) : wait_fn_(std::move(wait_fn)) {}
  void wait();
  bool pending() const { return static_cast<bool>(wait_fn_); }

 private:
  std::function<void()> wait_fn_;
};

enum class ReduceOp { sum, max };

class Communicator {
 public:
  // Joins the job described by `env` on `device` (cuda:LOCAL_RANK or cpu).
  // backend: auto (nccl on cuda, gloo on cpu), nccl or gloo.
  // timeout_s bounds the rendezvous and every collective: a rank that dies or
  // hangs ends the job on the others with an error instead of a silent hang.
  // World size 1 creates no process group.
  static std::shared_ptr<Communicator> create(const ProcessEnvironment& env, c10::Device device,
                                              config::Backend backend, double timeout_s);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  const ProcessEnvironment& environment() const { return env_; }
  // "nccl", "gloo", or "none" (one process).
  std::string backend_name() const { return backend_ ? config::name_of(*backend_) : "none"; }

  // In place over all ranks, then waited for (see PendingCollective::wait).
  void all_reduce(at::Tensor& tensor, ReduceOp op = ReduceOp::sum);
  // output [world * n] <- concatenation of every rank's input [n], rank order.
  PendingCollective all_gather(at::Tensor& output, at::Tensor& input);
  // output [n] <- sum over ranks of input[rank * n : (rank + 1) * n].
  PendingCollective reduce_scatter(at::Tensor& output, at::Tensor& input);
  // Every rank's copy of `tensor` becomes rank `root`'s.
  void broadcast(at::Tensor& tensor, int64_t root = 0);
  // Returns when every rank has reached it (host-side).
  void barrier();
  // Ends the process group cleanly (called by the destructor too).
  void shutdown();

 private:
  struct Impl;
  Communicator(ProcessEnvironment env, std::unique_ptr<Impl> impl,
               std::optional<config::Backend> backend);
  ProcessEnvironment env_;
  std::unique_ptr<Impl> impl_;
  std::optional<config::Backend> backend_;  // nccl or gloo; nullopt: one process, no process group
};

// Thrown for a collective that failed or timed out (a rank died, the network
// dropped): one line naming the rank and what to check.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace liger::trainer::distributed
