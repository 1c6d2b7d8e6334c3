#include "trainer/loss.h"

#include <torch/torch.h>

namespace liger::trainer {

at::Tensor token_loss(const models::TransformerImpl& model, const at::Tensor& hidden,
                      const at::Tensor& labels, double normalizer, double flce_chunk_mb,
                      kernels::FlceMode flce_mode, const at::Tensor& inverse_normalizer) {
  const auto& kernels = model.kernels();
  const at::Tensor flat_hidden = hidden.reshape({-1, hidden.size(-1)});
  const at::Tensor flat_labels = labels.reshape({-1});
  kernels::CrossEntropyOptions ce;
  // Sum over this micro-batch's targets / the accumulated batch's target count.
  ce.reduction = kernels::Reduction::mean;
  ce.normalizer = normalizer;
  ce.inverse_normalizer = inverse_normalizer;
  ce.softcap = model.config().final_softcap;  // Gemma 2: the loss caps the logits (both paths)
  if (kernels.use_fused_linear_cross_entropy()) {
    kernels::FusedLinearCrossEntropyOptions options;
    options.ce = ce;
    options.chunk_mb = flce_chunk_mb;
    options.mode = flce_mode;
    // The weight in compute dtype (a cast from fp32 master weights); tied,
    // its gradient joins the embedding lookup's (models/tied_embedding.h).
    at::Tensor weight = model.lm_head_weight_for(flat_hidden).to(model.compute_dtype());
    return kernels.fused_linear_cross_entropy(flat_hidden, weight, at::Tensor(), flat_labels,
                                              options);
  }
  return kernels.cross_entropy(model.lm_head_logits(flat_hidden), flat_labels, ce);
}

}  // namespace liger::trainer
