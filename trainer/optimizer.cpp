#include "trainer/optimizer.h"

#include "kernels/optim.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <optional>

namespace liger::trainer {

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : groups_(std::move(groups)), options_(options) {
  torch::NoGradGuard no_grad;
  uint64_t stream = 0;
  int64_t alone = 0;  // steps_alone tensors: one AdamWStepValues each in the device block
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    TORCH_CHECK(group.compute_copies.empty() || group.compute_copies.size() == group.params.size(),
                "AdamW: a group has ", group.compute_copies.size(), " compute copies for ",
                group.params.size(), " parameters");
    for (size_t i = 0; i < group.compute_copies.size(); ++i) {
      const Tensor& c = group.compute_copies[i];
      TORCH_CHECK(!c.defined() || (group.params[i].scalar_type() == at::kFloat &&
                                   c.sizes() == group.params[i].sizes()),
                  "AdamW: the compute copy of ", group.names[i],
                  " must have its shape beside an fp32 parameter");
    }
    std::vector<State> states;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      // Moments live in the parameter's dtype (fp32 master weights -> fp32 state,
      // pure bf16 -> bf16 state).
      State s;
      s.exp_avg = torch::zeros_like(p, at::MemoryFormat::Contiguous);
      s.exp_avg_sq = torch::zeros_like(p, at::MemoryFormat::Contiguous);
      s.step = torch::zeros({}, p.options().dtype(at::kFloat));
      s.stream = stream++;
      if (steps_alone(g, i)) ++alone;
      states.push_back(std::move(s));
    }
    state_.push_back(std::move(states));
  }
  if (options_.device_values) {
    TORCH_CHECK(stream > 0, "AdamW: device_values needs at least one parameter");
    c10::Device device = c10::kCPU;
    for (const auto& group : groups_) {
      if (!group.params.empty()) {
        device = group.params.front().device();
        break;
      }
    }
    constexpr int64_t kValueBytes = sizeof(kernels::AdamWStepValues);
    device_block_ = torch::zeros({alone * kValueBytes + 4},
                                 at::TensorOptions().dtype(at::kByte).device(device));
    device_lr_ =
        device_block_.narrow(0, alone * kValueBytes, 4).view(at::kFloat).squeeze(0);  // fp32 scalar
    int64_t slot = 0;
    for (size_t g = 0; g < groups_.size(); ++g) {
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        if (!steps_alone(g, i)) continue;
        state_[g][i].step_values = device_block_.narrow(0, slot++ * kValueBytes, kValueBytes);
      }
    }
  }
}

bool AdamW::rounds_stochastically(const Tensor& p) const {
  return options_.stochastic_rounding && p.scalar_type() == at::kBFloat16;
}

Tensor AdamW::compute_copy(size_t g, size_t i) const {
  const auto& copies = groups_[g].compute_copies;
  return copies.empty() ? Tensor() : copies[i];
}

Tensor AdamW::gradient(size_t g, size_t i) const {
  const Tensor copy = compute_copy(g, i);
  const Tensor& own = groups_[g].params[i].grad();  // with a copy: the folded fp32 sum, if any
  return copy.defined() && !own.defined() ? copy.grad() : own;
}

bool AdamW::steps_alone(size_t g, size_t i) const {
  return rounds_stochastically(groups_[g].params[i]) || compute_copy(g, i).defined();
}

kernels::AdamWStepOptions AdamW::step_options(size_t g, size_t i, double lr,
                                              const Tensor& grad_scale) const {
  const State& s = state_[g][i];
  kernels::AdamWStepOptions o;
  o.lr = lr;
  o.beta1 = options_.beta1;
  o.beta2 = options_.beta2;
  o.eps = options_.eps;
  o.weight_decay = groups_[g].weight_decay;
  o.step = s.count;
  o.stochastic_rounding = true;
  o.seed = options_.seed;
  o.stream = s.stream;
  o.grad_scale = grad_scale;
  if (options_.device_values) o.step_values = s.step_values;
  o.compute_copy = compute_copy(g, i);
  return o;
}

void AdamW::step(double lr, const Tensor& grad_scale) {
  if (options_.device_values) {
    prepare_step(lr);
    apply_step(grad_scale);
    return;
  }
  update(lr, Tensor(), grad_scale);
  ++steps_taken_;
}

void AdamW::update(double lr, const Tensor& lr_on_device, const Tensor& grad_scale) {
  torch::NoGradGuard no_grad;
  // Every group's steps_alone tensors, stepped together at the end (a few
  // multi-tensor launches on CUDA); they read no device step counter.
  std::vector<kernels::AdamWUpdate> alone;
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<Tensor> params, grads, exp_avgs, exp_avg_sqs, fused_steps, stepped;
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      const Tensor grad = gradient(g, i);
      State& s = state_[g][i];
      if (!grad.defined()) {
        // Device values: prepare_step has counted this parameter's step already.
        TORCH_CHECK(!options_.device_values, "AdamW (device values, CUDA graphs): parameter ",
                    groups_[g].names[i],
                    " got no gradient this step; every trained parameter must get one "
                    "(set training.cuda_graphs: false)");
        continue;
      }
      if (!options_.device_values) ++s.count;
      stepped.push_back(s.step);
      if (steps_alone(g, i)) {
        alone.push_back({p, grad, s.exp_avg, s.exp_avg_sq, step_options(g, i, lr, grad_scale)});
        continue;
      }
      params.push_back(p);
      grads.push_back(grad);
      exp_avgs.push_back(s.exp_avg);
      exp_avg_sqs.push_back(s.exp_avg_sq);
      fused_steps.push_back(s.step);
    }
    // Device step counters (checkpoints read them; the fused kernel's bias
    // correction reads them already incremented, as PyTorch's AdamW does).
    if (!stepped.empty()) at::_foreach_add_(stepped, 1);
    if (params.empty()) continue;
    // The fused kernel divides the gradients by its grad_scale (AMP's unscale).
    std::optional<Tensor> inverse_scale;
    if (grad_scale.defined()) inverse_scale = grad_scale.reciprocal();
    if (lr_on_device.defined()) {
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, fused_steps,
                        lr_on_device, options_.beta1, options_.beta2, groups_[g].weight_decay,
                        options_.eps,
                        /*amsgrad=*/false, /*maximize=*/false, inverse_scale);
    } else {
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, fused_steps,
                        lr, options_.beta1, options_.beta2, groups_[g].weight_decay, options_.eps,
                        /*amsgrad=*/false, /*maximize=*/false, inverse_scale);
    }
  }
  if (!alone.empty()) kernels::adamw_step_many(alone);
}

void AdamW::prepare_step(double lr) {
  TORCH_CHECK(options_.device_values, "AdamW::prepare_step needs AdamWOptions::device_values");
  prepared_lr_ = lr;
  prepared_ = true;
  ++steps_taken_;  // here, not in apply_step: a graph replays apply_step's launches without calling
                   // it
  // The host image of the device block, in pinned memory: the copy does not
  // block, and the caching host allocator keeps the buffer until it is done.
  const at::Tensor host =
      torch::empty({device_block_.numel()},
                   at::TensorOptions().dtype(at::kByte).pinned_memory(device_block_.is_cuda()));
  auto* bytes = host.data_ptr<uint8_t>();
  int64_t slot = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      ++state_[g][i]
            .count;  // every parameter is stepped (apply_step checks that each has a gradient)
      if (!steps_alone(g, i)) continue;
      const kernels::AdamWStepValues v =
          kernels::adamw_step_values(step_options(g, i, lr, Tensor()));
      std::memcpy(bytes + slot++ * sizeof(v), &v, sizeof(v));
    }
  }
  const float lr32 =
      static_cast<float>(lr);  // cast: the fused groups' lr as the fp32 the kernel reads
  std::memcpy(bytes + slot * sizeof(kernels::AdamWStepValues), &lr32, sizeof(lr32));
  device_block_.copy_(host, /*non_blocking=*/true);
}

void AdamW::apply_step(const Tensor& grad_scale) {
  TORCH_CHECK(options_.device_values, "AdamW::apply_step needs AdamWOptions::device_values");
  TORCH_CHECK(prepared_, "AdamW::apply_step without a prepare_step before it");
  prepared_ = false;  // the next apply_step needs its own prepare_step (a replay calls neither)
  update(prepared_lr_, device_lr_, grad_scale);
}

void AdamW::zero_grad() {
  for (auto& group : groups_) {
    for (auto& p : group.params) p.mutable_grad() = Tensor();
    for (auto& c : group.compute_copies) {
      if (c.defined()) c.mutable_grad() = Tensor();
    }
  }
}

std::vector<Tensor> AdamW::gradients() const {
  std::vector<Tensor> grads;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      Tensor grad = gradient(g, i);
      if (grad.defined()) grads.push_back(std::move(grad));
    }
  }
  return grads;
}

void AdamW::fold_copy_gradients() {
  torch::NoGradGuard no_grad;
  for (auto& group : groups_) {
    for (size_t i = 0; i < group.compute_copies.size(); ++i) {
      Tensor& copy = group.compute_copies[i];
      if (!copy.defined() || !copy.grad().defined()) continue;
      Tensor& sum = group.params[i].mutable_grad();
      if (sum.defined()) {
        sum.add_(copy.grad());  // fp32 += 16-bit, the addend widened exactly
      } else {
        sum = copy.grad().to(at::kFloat);  // cast: 16-bit to the fp32 sum, exact
      }
      copy.mutable_grad() = Tensor();
    }
  }
}

void AdamW::refresh_compute_copies() {
  torch::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].compute_copies.size(); ++i) {
      const Tensor& c = groups_[g].compute_copies[i];
      if (c.defined())
        c.copy_(groups_[g].params[i]);  // cast: fp32 to the copy's 16-bit dtype, to nearest
    }
  }
}

void AdamW::save(torch::serialize::OutputArchive& archive) const {
  archive.write("steps_taken", torch::tensor(steps_taken_, at::kLong));
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string& name = groups_[g].names[i];
      const State& s = state_[g][i];
      archive.write(name + ".exp_avg", s.exp_avg.cpu());
      archive.write(name + ".exp_avg_sq", s.exp_avg_sq.cpu());
      archive.write(name + ".step", s.step.cpu());
    }
  }
}

void AdamW::load(torch::serialize::InputArchive& archive) {
  torch::NoGradGuard no_grad;
  Tensor steps_taken;
  archive.read("steps_taken", steps_taken);
  steps_taken_ = steps_taken.item<int64_t>();
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string& name = groups_[g].names[i];
      State& s = state_[g][i];
      Tensor value;
      archive.read(name + ".exp_avg", value);
      s.exp_avg.copy_(value);
      archive.read(name + ".exp_avg_sq", value);
      s.exp_avg_sq.copy_(value);
      archive.read(name + ".step", value);
      s.step.copy_(value);
      // cast: the fp32 step count (exact below 2^24 steps) to the host's integer
      s.count = static_cast<int64_t>(std::llround(value.item<double>()));
    }
  }
}

std::vector<ParamGroup> split_decay_groups(const std::vector<std::pair<std::string, Tensor>>& named,
                                           double weight_decay,
                                           const std::vector<Tensor>& compute_copies) {
  TORCH_CHECK(compute_copies.empty() || compute_copies.size() == named.size(),
              "split_decay_groups: ", compute_copies.size(), " compute copies for ", named.size(),
              " parameters");
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = 0.0;
  for (size_t k = 0; k < named.size(); ++k) {
    const Tensor& p = named[k].second;
    ParamGroup& group = p.dim() >= 2 ? decay : no_decay;
    group.params.push_back(p);
    group.names.push_back(named[k].first);
    if (!compute_copies.empty()) group.compute_copies.push_back(compute_copies[k]);
  }
  return {decay, no_decay};
}

}  // namespace liger::trainer
