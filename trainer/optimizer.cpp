#include "trainer/optimizer.h"

#include "kernels/optim.h"

#include <torch/torch.h>

#include <cmath>
#include <optional>

namespace liger::trainer {

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : groups_(std::move(groups)), options_(options) {
  torch::NoGradGuard no_grad;
  uint64_t stream = 0;
  for (const auto& group : groups_) {
    std::vector<State> states;
    for (const auto& p : group.params) {
      // Moments live in the parameter's dtype (fp32 master weights -> fp32 state,
      // pure bf16 -> bf16 state).
      State s;
      s.exp_avg = torch::zeros_like(p, at::MemoryFormat::Contiguous);
      s.exp_avg_sq = torch::zeros_like(p, at::MemoryFormat::Contiguous);
      s.step = torch::zeros({}, p.options().dtype(at::kFloat));
      s.stream = stream++;
      states.push_back(std::move(s));
    }
    state_.push_back(std::move(states));
  }
}

bool AdamW::rounds_stochastically(const Tensor& p) const {
  return options_.stochastic_rounding && p.scalar_type() == at::kBFloat16;
}

void AdamW::step(double lr, const Tensor& grad_scale) {
  torch::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      if (!p.grad().defined()) continue;
      State& s = state_[g][i];
      // The fused kernel reads the already-incremented step (PyTorch adds 1 before calling it).
      s.step.add_(1);
      ++s.count;
      if (rounds_stochastically(p)) {
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
        kernels::adamw_step(p, p.grad(), s.exp_avg, s.exp_avg_sq, o);
        continue;
      }
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(s.exp_avg);
      exp_avg_sqs.push_back(s.exp_avg_sq);
      steps.push_back(s.step);
    }
    if (params.empty()) continue;
    // The fused kernel divides the gradients by its grad_scale (AMP's unscale).
    std::optional<Tensor> inverse_scale;
    if (grad_scale.defined()) inverse_scale = grad_scale.reciprocal();
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr,
                      options_.beta1, options_.beta2, groups_[g].weight_decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false, inverse_scale);
  }
  ++steps_taken_;
}

void AdamW::zero_grad() {
  for (auto& group : groups_) {
    for (auto& p : group.params) p.mutable_grad() = Tensor();
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
                                           double weight_decay) {
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = 0.0;
  for (const auto& [name, p] : named) {
    ParamGroup& group = p.dim() >= 2 ? decay : no_decay;
    group.params.push_back(p);
    group.names.push_back(name);
  }
  return {decay, no_decay};
}

}  // namespace liger::trainer
