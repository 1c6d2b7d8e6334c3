#include "trainer/evaluate.h"

#include "data/loader.h"
#include "data/packing.h"
#include "kernels/document_length.h"
#include "models/transformer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace liger::trainer {

EvalResult evaluate(models::TransformerImpl& model, const data::PackedDataset& data,
                    int64_t micro_batch_size, int64_t max_batches, c10::Device device) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const kernels::KernelSet reference = kernels::KernelSet::reference();
  kernels::CrossEntropyOptions ce;
  ce.reduction = kernels::Reduction::sum;  // logits() already applied any final softcap

  EvalResult result;
  result.windows = data.num_windows();
  if (max_batches > 0) result.windows = std::min(result.windows, max_batches * micro_batch_size);
  const bool pass_positions = data.packing() == data::PackingMode::isolated;
  // Summed in fp32 on the device; read once at the end.
  at::Tensor loss_sum = torch::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
  for (int64_t first = 0; first < result.windows; first += micro_batch_size) {
    const int64_t rows = std::min(micro_batch_size, result.windows - first);
    data::Batch batch = data::batch_of_windows(data, first, rows);
    const std::vector<int64_t> shape{batch.batch_size, batch.seq_len};
    const at::Tensor ids = torch::from_blob(batch.input_ids.data(), shape, at::kLong).to(device);
    const at::Tensor labels = torch::from_blob(batch.labels.data(), shape, at::kLong).to(device);
    at::Tensor positions, documents;
    int64_t document_tokens = 0;
    if (pass_positions) {
      positions = torch::from_blob(batch.position_ids.data(), shape, at::kLong).to(device);
      documents = torch::from_blob(batch.document_ids.data(), shape, at::kLong).to(device);
      document_tokens = kernels::pair_weighted_document_length(batch.document_ids.data(),
                                                               batch.batch_size, batch.seq_len);
    }
    const at::Tensor hidden = model.forward(ids, positions, documents, document_tokens);
    for (int64_t row = 0; row < rows; ++row) {
      const at::Tensor logits = model.logits(hidden[row]);  // [seq_len, vocab], compute dtype
      loss_sum += reference.cross_entropy(logits, labels[row], ce);
    }
    result.target_tokens += batch.num_target_tokens();
  }
  model.train(was_training);
  result.loss = result.target_tokens > 0
                    ? loss_sum.item<double>() / static_cast<double>(result.target_tokens)
                    : std::numeric_limits<double>::quiet_NaN();
  result.perplexity = std::exp(result.loss);
  return result;
}

}  // namespace liger::trainer
