// Liger-Kernel's snippet `LigerFusedLinearCrossEntropyLoss()(model.weight, input, target)` in
// C++, on an nn::Linear(128, 256)'s weight. Exits 1 when its loss or gradients differ from the
// reference op's (the lm_head GEMM, then cross entropy, in plain ATen).
#include "kernels/nn/nn.h"  // the modules, functional ops and the registry (KernelSet)

#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  const torch::Device device = torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  torch::nn::Linear model(128, 256);
  model->to(device);
  liger::nn::FusedLinearCrossEntropyLoss loss_fn;
  const torch::Tensor input =
      torch::randn({4, 128}, torch::TensorOptions().device(device).requires_grad(true));
  const torch::Tensor target =
      torch::randint(256, {4}, torch::TensorOptions().device(device).dtype(torch::kLong));
  const torch::Tensor loss = loss_fn(model->weight, input, target);
  loss.backward();

  // The reference op on fresh copies of the same weight and input.
  const torch::Tensor weight_ref = model->weight.detach().clone().requires_grad_(true);
  const torch::Tensor input_ref = input.detach().clone().requires_grad_(true);
  const torch::Tensor loss_ref = liger::kernels::KernelSet::reference().fused_linear_cross_entropy(
      input_ref, weight_ref, /*bias=*/{}, target, {});
  loss_ref.backward();

  // fp32 throughout: equal up to rounding (the fused op sums in another order).
  const auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return a.allclose(b, /*rtol=*/1e-4, /*atol=*/1e-6);
  };
  const bool same = close(loss, loss_ref) && close(input.grad(), input_ref.grad()) &&
                    close(model->weight.grad(), weight_ref.grad());
  const auto op = liger::kernels::Op::fused_linear_cross_entropy;
  std::printf("flce_snippet: %s backend on %s: loss %.6f, reference %.6f, gradients %s\n",
              liger::kernels::backend_name(liger::nn::functional::backend_for(op, input)),
              device.str().c_str(), loss.item<double>(), loss_ref.item<double>(),
              same ? "equal" : "DIFFERENT");
  return same ? 0 : 1;
}
