#include "kernels/nn/losses.h"

#include "kernels/nn/functional.h"

#include <c10/util/Exception.h>

namespace liger::nn {

namespace {

const char* reduction_name(kernels::Reduction reduction) {
  switch (reduction) {
    case kernels::Reduction::mean: return "mean";
    case kernels::Reduction::sum: return "sum";
    case kernels::Reduction::none: return "none";
  }
  return "unknown";
}

// The ops take rows: [..., V] -> [N, V] and the matching target [...] -> [N].
void check_rows(const char* module, const at::Tensor& rows, const at::Tensor& target) {
  TORCH_CHECK(rows.dim() >= 1, module, ": the input needs at least one dimension");
  TORCH_CHECK(target.numel() * rows.size(-1) == rows.numel(), module, ": target ", target.sizes(),
              " does not match the input ", rows.sizes(), " (one target per row of the input)");
}

}  // namespace

CrossEntropyLossImpl::CrossEntropyLossImpl(const CrossEntropyLossOptions& options_)
    : options(options_) {}

void CrossEntropyLossImpl::pretty_print(std::ostream& stream) const {
  stream << "liger::nn::CrossEntropyLoss(ignore_index=" << options.ignore_index()
         << ", reduction=" << reduction_name(options.reduction()) << ")";
}

at::Tensor CrossEntropyLossImpl::forward(const at::Tensor& logits, const at::Tensor& target) {
  check_rows("liger::nn::CrossEntropyLoss", logits, target);
  kernels::CrossEntropyOptions ce;
  ce.ignore_index = options.ignore_index();
  ce.label_smoothing = options.label_smoothing();
  ce.z_loss_scale = options.z_loss_scale();
  ce.softcap = options.softcap();
  ce.reduction = options.reduction();
  return functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), target.reshape({-1}), ce,
                                   options.fused());
}

FusedLinearCrossEntropyLossImpl::FusedLinearCrossEntropyLossImpl(
    const FusedLinearCrossEntropyLossOptions& options_)
    : options(options_) {}

void FusedLinearCrossEntropyLossImpl::pretty_print(std::ostream& stream) const {
  stream << "liger::nn::FusedLinearCrossEntropyLoss(ignore_index=" << options.ignore_index()
         << ", reduction=" << reduction_name(options.reduction())
         << ", chunk_mb=" << options.chunk_mb() << ")";
}

at::Tensor FusedLinearCrossEntropyLossImpl::forward(const at::Tensor& weight,
                                                    const at::Tensor& input,
                                                    const at::Tensor& target,
                                                    const at::Tensor& bias) {
  check_rows("liger::nn::FusedLinearCrossEntropyLoss", input, target);
  kernels::FusedLinearCrossEntropyOptions flce;
  flce.ce.ignore_index = options.ignore_index();
  flce.ce.label_smoothing = options.label_smoothing();
  flce.ce.z_loss_scale = options.z_loss_scale();
  flce.ce.softcap = options.softcap();
  flce.ce.reduction = options.reduction();
  flce.chunk_mb = options.chunk_mb();
  const at::Tensor hidden = input.reshape({-1, input.size(-1)});
  return functional::fused_linear_cross_entropy(hidden, weight, bias, target.reshape({-1}), flce,
                                                options.fused());
}

}  // namespace liger::nn
