#include "trainer/compute_copies.h"

#include <torch/torch.h>

namespace liger::trainer {

ComputeCopies move_to_compute_copies(torch::nn::Module& model, at::ScalarType dtype) {
  NamedTensors parameters;
  for (auto& item : model.named_parameters()) parameters.emplace_back(item.key(), item.value());
  return move_to_compute_copies(parameters, dtype);
}

ComputeCopies move_to_compute_copies(const NamedTensors& parameters, at::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  ComputeCopies out;
  for (const auto& [name, handle] : parameters) {
    at::Tensor parameter = handle;  // the same TensorImpl as the module's parameter
    TORCH_CHECK(parameter.scalar_type() == at::kFloat, "compute copies: parameter ", name, " is ",
                parameter.scalar_type(), ", not float32");
    // variable_data: the same storage, a fresh version counter, no autograd.
    at::Tensor master = parameter.variable_data();
    parameter.set_data(master.to(dtype));  // cast: fp32 to the compute dtype, to nearest
    out.masters.emplace_back(name, std::move(master));
    out.copies.push_back(parameter);
  }
  return out;
}

}  // namespace liger::trainer
