#include "models/hf_expert_layout.h"

namespace liger::models {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<ExpertSlice> per_expert_layout(const std::string& name, int64_t num_experts,
                                           int64_t ffn) {
  if (num_experts <= 0) return {};
  const std::string gate = ".mlp.gate.weight", gate_up = ".mlp.experts.gate_up_proj",
                    down = ".mlp.experts.down_proj";
  // "model.layers.3" + ".block_sparse_moe." + ...
  auto stored = [&name](const std::string& suffix, const std::string& rest) {
    return name.substr(0, name.size() - suffix.size()) + ".block_sparse_moe." + rest;
  };
  auto expert = [&](const std::string& suffix, int64_t e, const char* w) {
    return stored(suffix, "experts." + std::to_string(e) + "." + w + ".weight");
  };
  std::vector<ExpertSlice> out;
  if (ends_with(name, gate)) {
    out.push_back({stored(gate, "gate.weight"), -1, 0});
  } else if (ends_with(name, gate_up)) {
    for (int64_t e = 0; e < num_experts; ++e) {
      out.push_back({expert(gate_up, e, "w1"), e, 0});
      out.push_back({expert(gate_up, e, "w3"), e, ffn});
    }
  } else if (ends_with(name, down)) {
    for (int64_t e = 0; e < num_experts; ++e) out.push_back({expert(down, e, "w2"), e, 0});
  }
  return out;
}

}  // namespace liger::models
