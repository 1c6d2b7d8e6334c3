// AdamW over parameter groups, stepped with LibTorch's fused kernel
// (at::_fused_adamw_: one launch per group on CUDA, vectorised on CPU)
// instead of a loop of small ops. Decoupled weight decay as in PyTorch's
// torch.optim.AdamW; norms and biases go in a group without decay.
// bf16 parameters with stochastic_rounding take kernels::adamw_step instead
// (kernels/optim.h; all of them at once through kernels::adamw_step_many: a
// multi-tensor CUDA launch per dtype combination, or ATen ops): the same
// fp32 math, the new value rounded to bf16 stochastically so that updates
// below bf16 resolution are kept in expectation.
// fp32 parameters with a 16-bit compute copy (mixed precision: the model runs
// on the copies) also take kernels::adamw_step: it reads the copy's gradient
// and writes the new value into the copy as well as the fp32 parameter.
#pragma once

#include "kernels/optim.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace liger::trainer {

using at::Tensor;

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // bf16 parameters: round each update to bf16 stochastically (else, and for
  // fp32/fp16 parameters, to nearest through at::_fused_adamw_).
  bool stochastic_rounding = true;
  // Seeds the rounding's counter-based random bits, a hash of (seed, tensor,
  // step, element): the same seed gives the same bits.
  uint64_t seed = 0;
  // CUDA graphs: the step's lr, step counts and rounding keys live in device
  // memory that prepare_step() rewrites, and the update launches read them
  // there (apply_step() is then capturable: a replay updates correctly at any
  // later step). Every trained parameter must get a gradient each step.
  bool device_values = false;
};

struct ParamGroup {
  std::vector<Tensor> params;
  std::vector<std::string> names;
  double weight_decay = 0.0;
  // Empty, or one per parameter: its bf16/fp16 compute copy (an autograd leaf
  // of the model; an undefined entry: none). A parameter with a copy is
  // stepped with the copy's gradient (or, after fold_copy_gradients, with its
  // own fp32 .grad), and each update rewrites the copy.
  std::vector<Tensor> compute_copies;
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);

  // One update with learning rate `lr`. Parameters without a gradient are skipped.
  // grad_scale: optional fp32 device scalar multiplying every gradient
  // (clipping; undefined = 1), applied inside the update, not to .grad.
  void step(double lr, const Tensor& grad_scale = Tensor());
  void zero_grad();
  // The gradients the next update reads (the compute copies' where there are
  // copies), every defined one: what clipping measures.
  std::vector<Tensor> gradients() const;
  // Casts every parameter into its compute copy (after the parameters were
  // loaded from a checkpoint: the copies must show the same weights).
  void refresh_compute_copies();
  // Gradient accumulation with compute copies, after each micro-batch's
  // backward: adds every copy's 16-bit gradient into its fp32 parameter's
  // .grad (cast on the first fold) and clears the copy's, so micro-batches
  // sum in fp32, not in bf16. The update then reads the fp32 sum.
  void fold_copy_gradients();

  // With options.device_values, step() in two halves. prepare_step: the host
  // half, outside any graph: counts the step and copies its values (lr, bias
  // corrections, keys) to the device without blocking. apply_step: the
  // launches, reading those values on the device (captured once, replayed
  // after each prepare_step). steps_taken() counts prepare_step calls.
  void prepare_step(double lr);
  void apply_step(const Tensor& grad_scale = Tensor());

  int64_t steps_taken() const { return steps_taken_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // exp_avg, exp_avg_sq and step of every parameter, keyed by its name.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  struct State {
    Tensor exp_avg, exp_avg_sq, step;  // step: fp32 scalar tensor, as the fused kernel wants
    int64_t count = 0;                 // `step` on the host (no device sync to read it)
    uint64_t stream = 0;               // this tensor's index in the optimizer: its random stream
    Tensor step_values;  // device_values + stochastic rounding: its AdamWStepValues bytes
  };
  // The update launches for every parameter with a gradient: lr_on_device
  // defined (device values), the fused groups read it and the stochastically
  // rounded tensors their step values; else lr is a launch argument and the
  // host counts each stepped parameter here.
  void update(double lr, const Tensor& lr_on_device, const Tensor& grad_scale);
  // The options of kernels::adamw_step for parameter i of group g at its current count.
  kernels::AdamWStepOptions step_options(size_t g, size_t i, double lr,
                                         const Tensor& grad_scale) const;
  // Whether `p` is stepped by kernels::adamw_step with stochastic rounding.
  bool rounds_stochastically(const Tensor& p) const;
  // Parameter i of group g's compute copy (undefined: none) and the gradient its update reads.
  Tensor compute_copy(size_t g, size_t i) const;
  Tensor gradient(size_t g, size_t i) const;
  // Whether parameter i of group g is stepped by kernels::adamw_step (stochastic
  // rounding or a compute copy), not by the group's _fused_adamw_.
  bool steps_alone(size_t g, size_t i) const;
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<State>> state_;  // [group][param]
  AdamWOptions options_;
  int64_t steps_taken_ = 0;
  // device_values: one device block, each steps_alone tensor's
  // AdamWStepValues followed by the fp32 lr of the fused groups.
  Tensor device_block_, device_lr_;
  double prepared_lr_ = 0.0;
  bool prepared_ = false;
};

// Splits named parameters into a decayed group (matrices, embeddings) and a
// group without decay (1-D: norm weights, biases). compute_copies: empty, or
// one per named parameter (see ParamGroup), split the same way.
std::vector<ParamGroup> split_decay_groups(const std::vector<std::pair<std::string, Tensor>>& named,
                                           double weight_decay,
                                           const std::vector<Tensor>& compute_copies = {});

}  // namespace liger::trainer
