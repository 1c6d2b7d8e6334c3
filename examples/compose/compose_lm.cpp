// A small causal LM from torch::nn layers and liger::nn modules (RMSNorm, rope,
// SwiGLUMLP, FusedLinearCrossEntropyLoss), trained a few steps on Shakespeare
// with bytes as tokens. Prints the loss of every step.
//   compose_lm <tinyshakespeare.txt> [steps]
#include "kernels/nn/nn.h"

#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

constexpr int64_t kVocab = 256;  // one token per byte
constexpr int64_t kHidden = 64, kHeads = 4, kHeadDim = kHidden / kHeads, kLayers = 2;
constexpr int64_t kSeq = 64, kBatch = 16;

// Pre-norm decoder block: x + attention(norm(x)), then x + mlp(norm(x)).
struct BlockImpl : torch::nn::Module {
  liger::nn::RMSNorm attn_norm = register_module("attn_norm", liger::nn::RMSNorm(kHidden));
  torch::nn::Linear qkv = register_module(
      "qkv", torch::nn::Linear(torch::nn::LinearOptions(kHidden, 3 * kHidden).bias(false)));
  torch::nn::Linear out = register_module(
      "out", torch::nn::Linear(torch::nn::LinearOptions(kHidden, kHidden).bias(false)));
  liger::nn::RMSNorm mlp_norm = register_module("mlp_norm", liger::nn::RMSNorm(kHidden));
  liger::nn::SwiGLUMLP mlp = register_module("mlp", liger::nn::SwiGLUMLP(kHidden, 3 * kHidden));

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
    const int64_t batch = x.size(0), seq = x.size(1);
    // [B, T, 3 heads, D] -> q, k, v, each [B, T, heads, D]
    const auto heads = qkv(attn_norm(x)).view({batch, seq, 3 * kHeads, kHeadDim}).split(kHeads, 2);
    const auto [q, k] = liger::nn::rope(heads[0], heads[1], cos, sin);
    // SDPA wants [B, heads, T, D].
    const torch::Tensor attended =
        at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                         heads[2].transpose(1, 2), {}, 0.0, /*is_causal=*/true);
    const torch::Tensor h = x + out(attended.transpose(1, 2).reshape({batch, seq, kHidden}));
    return h + mlp(mlp_norm(h));
  }
};
TORCH_MODULE(Block);

struct TinyLMImpl : torch::nn::Module {
  torch::nn::Embedding embed = register_module("embed", torch::nn::Embedding(kVocab, kHidden));
  std::vector<Block> blocks;
  liger::nn::RMSNorm norm = register_module("norm", liger::nn::RMSNorm(kHidden));
  torch::nn::Linear lm_head = register_module(
      "lm_head", torch::nn::Linear(torch::nn::LinearOptions(kHidden, kVocab).bias(false)));

  TinyLMImpl() {
    for (int64_t i = 0; i < kLayers; ++i) {
      blocks.push_back(register_module("block" + std::to_string(i), Block()));
    }
  }

  // ids [B, T] -> final-norm hidden states [B, T, hidden]; the loss applies lm_head.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
    torch::Tensor x = embed(ids);
    for (Block& block : blocks) x = block(x, cos, sin);
    return norm(x);
  }
};
TORCH_MODULE(TinyLM);

}  // namespace

int main(int argc, char** argv) {
  std::ifstream file(argc > 1 ? argv[1] : "", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (text.size() < 10 * kSeq) {
    std::fprintf(stderr, "usage: compose_lm <text file, e.g. tinyshakespeare.txt> [steps]\n");
    return 2;
  }
  const int steps = argc > 2 ? std::stoi(argv[2]) : 40;

  torch::manual_seed(0);
  // The bytes as token ids (int64).
  const torch::Tensor tokens = torch::from_blob(const_cast<char*>(text.data()),
                                                {static_cast<int64_t>(text.size())}, torch::kUInt8)
                                   .to(torch::kLong);
  TinyLM model;
  liger::nn::FusedLinearCrossEntropyLoss loss_fn;
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(3e-3).weight_decay(0.0));
  const auto [cos, sin] = liger::nn::rope_cos_sin(kSeq, kHeadDim);

  for (int step = 0; step < steps; ++step) {
    // kBatch random windows of kSeq + 1 tokens: inputs and next-token targets.
    const torch::Tensor starts = torch::randint(tokens.size(0) - kSeq - 1, {kBatch, 1});
    const torch::Tensor windows =
        tokens.index_select(0, (starts + torch::arange(kSeq + 1).unsqueeze(0)).flatten())
            .view({kBatch, kSeq + 1});
    const torch::Tensor hidden = model(windows.slice(1, 0, kSeq), cos, sin);
    const torch::Tensor loss = loss_fn(model->lm_head->weight, hidden, windows.slice(1, 1));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    std::printf("step %d loss %.4f\n", step, loss.item<double>());
  }
  return 0;
}
