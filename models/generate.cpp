#include "models/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

namespace liger::models {
namespace {

// Samples one id from logits [V] (fp32) with temperature and nucleus (top-p).
int64_t sample_next(const Tensor& logits, const GenerationOptions& options,
                    at::Generator& generator) {
  if (options.temperature <= 0.0) return logits.argmax().item<int64_t>();
  Tensor probs = torch::softmax(logits / options.temperature, -1);
  auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
  // Keep the smallest prefix whose mass reaches top_p (always at least one).
  Tensor mass_before = sorted.cumsum(-1) - sorted;
  sorted.masked_fill_(mass_before >= options.top_p, 0.0);
  Tensor pick = at::multinomial(sorted / sorted.sum(), 1, /*replacement=*/false, generator);
  return order.index({pick}).item<int64_t>();
}

bool stops(int64_t id, const GenerationOptions& options) {
  if (options.eos_id >= 0 && id == options.eos_id) return true;
  return std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end();
}

Tensor ids_tensor(const std::vector<int64_t>& tokens, size_t start, const at::Device& device) {
  return torch::tensor(std::vector<int64_t>(tokens.begin() + static_cast<std::ptrdiff_t>(start),
                                            tokens.end()),
                       at::kLong)
      .to(device)
      .unsqueeze(0);
}

// Logits of the last position, fp32 on the CPU for sampling.
Tensor last_logits(const TransformerImpl& model, const Tensor& hidden) {
  return model.logits(hidden.select(1, -1)).squeeze(0).to(at::kFloat).cpu();
}

}  // namespace

std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens");
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const at::Device device = model.lm_head_weight().device();
  const int64_t window = model.config().max_seq_len;
  std::vector<int64_t> tokens = prompt;
  KvCache cache;

  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    Tensor logits;
    const int64_t total = static_cast<int64_t>(tokens.size());
    if (!options.use_cache) {
      const size_t start = static_cast<size_t>(std::max<int64_t>(0, total - window));
      logits = last_logits(model, model.forward(ids_tensor(tokens, start, device)));
    } else if (step == 0 || cache.length() + 1 > window) {
      // Prefill: the whole context at once. A full cache is rebuilt from the
      // last half of the window (positions restart at 0, as without a cache).
      const int64_t keep = step == 0 ? std::min(total, window) : std::max<int64_t>(1, window / 2);
      cache.clear();
      logits = last_logits(
          model, model.forward_cached(ids_tensor(tokens, static_cast<size_t>(total - keep), device),
                                      cache));
    } else {
      logits = last_logits(
          model, model.forward_cached(ids_tensor(tokens, tokens.size() - 1, device), cache));
    }
    const int64_t next = sample_next(logits, options, generator);
    tokens.push_back(next);
    if (stops(next, options)) break;
  }
  model.train(was_training);
  return tokens;
}

}  // namespace liger::models
