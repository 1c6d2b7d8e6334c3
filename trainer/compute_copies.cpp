#include "trainer/compute_copies.h"

#include <torch/torch.h>

namespace liger::trainer {

ComputeCopies move_to_compute_copies(torch::nn::Module& model, at::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  ComputeCopies out;
  for (auto& item : model.named_parameters()) {
    at::Tensor& parameter = item.value();
    TORCH_CHECK(parameter.scalar_type() == at::kFloat, "compute copies: parameter ", item.key(), " is ",
                parameter.scalar_type(), ", not float32");
    // variable_data: the same storage, a fresh version counter, no autograd.
    at::Tensor master = parameter.variable_data();
    parameter.set_data(master.to(dtype));  // cast: fp32 to the compute dtype, to nearest
    out.masters.emplace_back(item.key(), std::move(master));
    out.copies.push_back(parameter);
  }
  return out;
}

}  // namespace liger::trainer
