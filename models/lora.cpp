#include "models/lora.h"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/torch.h>

#include <cmath>

namespace liger::models {
namespace {

constexpr std::array<const char*, kNumLoraTargets> kTargetNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

bool is_attention(LoraTarget t) {
  return static_cast<int>(t) <= static_cast<int>(LoraTarget::o_proj);
}

// [out, in] of a targeted projection.
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, LoraTarget t) {
  const int64_t d = c.resolved_head_dim();
  switch (t) {
    case LoraTarget::q_proj: return {c.num_heads * d, c.hidden_size};
    case LoraTarget::k_proj:
    case LoraTarget::v_proj: return {c.num_kv_heads * d, c.hidden_size};
    case LoraTarget::o_proj: return {c.hidden_size, c.num_heads * d};
    case LoraTarget::gate_proj:
    case LoraTarget::up_proj: return {c.intermediate_size, c.hidden_size};
    case LoraTarget::down_proj: return {c.hidden_size, c.intermediate_size};
  }
  throw std::logic_error("projection_shape: unknown target");
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const char* lora_target_name(LoraTarget target) {
  return kTargetNames[static_cast<size_t>(target)];
}

std::optional<LoraTarget> lora_target_from_name(const std::string& name) {
  for (int i = 0; i < kNumLoraTargets; ++i) {
    if (name == kTargetNames[static_cast<size_t>(i)]) return static_cast<LoraTarget>(i);
  }
  return std::nullopt;
}

std::vector<std::string> all_lora_target_names() {
  return {kTargetNames.begin(), kTargetNames.end()};
}

std::vector<LoraTarget> lora_targets_of(const ModelConfig& config) {
  // Every family has separate q/k/v/o; all but the MoE ones a dense gated MLP
  // (adapters on the experts are not supported).
  std::vector<LoraTarget> out;
  const int last =
      config.num_experts > 0 ? static_cast<int>(LoraTarget::o_proj) : kNumLoraTargets - 1;
  for (int i = 0; i <= last; ++i) out.push_back(static_cast<LoraTarget>(i));
  return out;
}

double lora_training_flops_per_token(const ModelConfig& config, const LoraOptions& options,
                                     bool lm_head_trained, int64_t seq_len) {
  const double lm_head = static_cast<double>(config.vocab_size * config.hidden_size);
  const double frozen =
      static_cast<double>(config.matmul_parameters()) - (lm_head_trained ? lm_head : 0.0);
  // Every matmul at 6, less the weight gradient (2) of the frozen ones, plus the adapters at 6.
  return config.training_flops_per_token(seq_len) - 2.0 * frozen +
         6.0 * static_cast<double>(lora_parameter_count(config, options));
}

bool LoraOptions::targets_projection(LoraTarget target) const {
  for (const LoraTarget t : targets) {
    if (t == target) return true;
  }
  return false;
}

LoraAdaptersImpl::LoraAdaptersImpl(const ModelConfig& config, LoraOptions options,
                                   const at::TensorOptions& param_options)
    : options_(std::move(options)), num_layers_(config.num_layers) {
  TORCH_CHECK(options_.rank >= 1, "LoRA rank must be >= 1, got ", options_.rank);
  // The module tree spells PEFT's names:
  // model.layers.<i>.<self_attn|mlp>.<target>.lora_<A|B>.weight
  auto backbone = register_module("model", std::make_shared<torch::nn::Module>());
  auto layers = backbone->register_module("layers", torch::nn::ModuleList());
  pairs_.resize(static_cast<size_t>(num_layers_));
  for (int64_t i = 0; i < num_layers_; ++i) {
    auto layer = std::make_shared<torch::nn::Module>();
    std::shared_ptr<torch::nn::Module> attention, mlp;
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto target = static_cast<LoraTarget>(t);
      if (!options_.targets_projection(target)) continue;
      std::shared_ptr<torch::nn::Module>& parent = is_attention(target) ? attention : mlp;
      if (!parent) {
        parent = layer->register_module(is_attention(target) ? "self_attn" : "mlp",
                                        std::make_shared<torch::nn::Module>());
      }
      const auto [out, in] = projection_shape(config, target);
      auto projection =
          parent->register_module(lora_target_name(target), std::make_shared<torch::nn::Module>());
      auto a = projection->register_module(
          "lora_A", Weight(at::IntArrayRef{options_.rank, in}, param_options));
      auto b = projection->register_module(
          "lora_B", Weight(at::IntArrayRef{out, options_.rank}, param_options));
      pairs_[static_cast<size_t>(i)][static_cast<size_t>(t)] = LoraPair{a.get(), b.get()};
    }
    layers->push_back(layer);
  }
}

const LoraPair* LoraAdaptersImpl::find(int64_t layer, LoraTarget target) const {
  const LoraPair& pair = pairs_.at(static_cast<size_t>(layer))[static_cast<size_t>(target)];
  return pair.a == nullptr ? nullptr : &pair;
}

void LoraAdaptersImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    if (item.value().device().is_meta()) continue;
    item.value().copy_(
        initial_value(item.key(), item.value(), generator));  // cast: fp32 -> the parameter dtype
  }
}

at::Tensor LoraAdaptersImpl::initial_value(const std::string& name, const at::Tensor& p,
                                           at::Generator& generator) const {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  if (ends_with(name, "lora_B.weight")) return at::zeros(p.sizes(), f32);
  // PEFT: nn.init.kaiming_uniform_(A, a=sqrt(5)): bound = gain * sqrt(3 / fan_in)
  // with gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), i.e. 1 / sqrt(in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(p.size(1)));
  return at::empty(p.sizes(), f32).uniform_(-bound, bound, generator);
}

int64_t LoraAdaptersImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

bool is_lora_parameter_name(const std::string& name) {
  return ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight");
}

int64_t lora_parameter_count(const ModelConfig& config, const LoraOptions& options) {
  int64_t per_layer = 0;
  for (const LoraTarget t : options.targets) {
    const auto [out, in] = projection_shape(config, t);
    per_layer += options.rank * (in + out);
  }
  return per_layer * config.num_layers;
}

at::Tensor lora_dropout_mask(const at::Tensor& x, double p) {
  // Kept where a uniform draw in [0, 1) is >= p: probability 1 - p.
  return at::rand(x.sizes(), x.options().dtype(at::kFloat)).ge(p);
}

at::Tensor apply_lora_dropout(const at::Tensor& x, const at::Tensor& mask, double p) {
  // x * mask in x's dtype (exact), then the 1 / (1 - p) scale rounded once into x's dtype.
  return x * mask * (1.0 / (1.0 - p));
}

}  // namespace liger::models
