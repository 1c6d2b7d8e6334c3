// Where a Mixtral checkpoint keeps the MoE block's parameters. The model
// holds them as transformers 5 does in memory (mlp.gate.weight,
// mlp.experts.gate_up_proj [E, 2F, H], mlp.experts.down_proj [E, H, F]);
// safetensors files may hold them so (fused), or per expert, the layout
// transformers (4, and 5 when it saves) writes:
//   block_sparse_moe.gate.weight            [E, H]   = mlp.gate.weight
//   block_sparse_moe.experts.{e}.w1.weight  [F, H]   = gate_up_proj[e][0:F]   (gate)
//   block_sparse_moe.experts.{e}.w3.weight  [F, H]   = gate_up_proj[e][F:2F]  (up)
//   block_sparse_moe.experts.{e}.w2.weight  [H, F]   = down_proj[e]
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace liger::models {

// One stored tensor of the per-expert layout and where it goes: the whole
// parameter (expert -1), or rows row .. row + its rows of parameter[expert].
struct ExpertSlice {
  std::string tensor;
  int64_t expert = -1;
  int64_t row = 0;
};

// The per-expert tensors that make up parameter `name` of an MoE model with
// `num_experts` experts of width `ffn`; empty when `name` is not an MoE
// parameter (it is stored under its own name).
std::vector<ExpertSlice> per_expert_layout(const std::string& name, int64_t num_experts,
                                           int64_t ffn);

}  // namespace liger::models
