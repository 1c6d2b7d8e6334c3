#include "models/generate.h"

#include <torch/torch.h>

#include <algorithm>

namespace liger::models {
namespace {

// Samples one id from logits [V] (fp32) with temperature and nucleus (top-p).
int64_t sample_next(const Tensor& logits, const GenerationOptions& options, at::Generator& generator) {
  if (options.temperature <= 0.0) return logits.argmax().item<int64_t>();
  Tensor probs = torch::softmax(logits / options.temperature, -1);
  auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
  // Keep the smallest prefix whose mass reaches top_p (always at least one).
  Tensor mass_before = sorted.cumsum(-1) - sorted;
  sorted.masked_fill_(mass_before >= options.top_p, 0.0);
  Tensor pick = at::multinomial(sorted / sorted.sum(), 1, /*replacement=*/false, generator);
  return order.index({pick}).item<int64_t>();
}

}  // namespace

std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const at::Device device = model.lm_head_weight().device();
  const int64_t window = model.config().max_seq_len;
  std::vector<int64_t> tokens = prompt;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(tokens.size()) - window);
    Tensor ids = torch::tensor(std::vector<int64_t>(tokens.begin() + start, tokens.end()), at::kLong)
                     .to(device)
                     .unsqueeze(0);
    Tensor hidden = model.forward(ids);
    // Logits of the last position only, in fp32 on the CPU for sampling.
    Tensor last = model.logits(hidden.select(1, -1)).squeeze(0).to(at::kFloat).cpu();
    const int64_t next = sample_next(last, options, generator);
    tokens.push_back(next);
    if (options.eos_id >= 0 && next == options.eos_id) break;
  }
  model.train(was_training);
  return tokens;
}

}  // namespace liger::models
