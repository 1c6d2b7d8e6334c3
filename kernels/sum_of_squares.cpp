#include "kernels/sum_of_squares.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef LIGER_WITH_CUDA
#include "kernels/cuda/binding.h"
#endif

#include <map>

namespace liger::kernels {
namespace {

// ATen: one norm per tensor (a multi-tensor launch per dtype on CUDA), squared and added.
Tensor sum_of_squares_aten(const std::vector<Tensor>& tensors) {
  const std::vector<Tensor> norms = at::_foreach_norm(tensors, 2, at::kFloat);
  return at::stack(norms).square().sum();
}

#ifdef LIGER_WITH_CUDA
// The fused kernel: the contiguous, aligned tensors of each dtype in
// launches of up to kSumOfSquaresTensors, all partial sums into one buffer,
// then one fixed-order total. Any other tensor (strided, unaligned, another
// floating dtype) is added through ATen.
Tensor sum_of_squares_cuda(const std::vector<Tensor>& tensors) {
  namespace launch = ::liger::cuda_kernels;
  const c10::cuda::CUDAGuard guard(tensors.front().device());
  std::map<at::ScalarType, std::vector<Tensor>> by_dtype;
  std::vector<Tensor> others;
  for (const Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    if (cuda::is_kernel_dtype(t) && t.is_contiguous() && launch::aligned16(t.data_ptr())) {
      by_dtype[t.scalar_type()].push_back(t);
    } else {
      others.push_back(t);
    }
  }
  std::vector<std::pair<launch::DType, launch::SumOfSquaresTable>> launches;
  for (const auto& [dtype, group] : by_dtype) {
    const int64_t vec = 16 / static_cast<int64_t>(at::elementSize(dtype));
    launch::SumOfSquaresTable table;
    int64_t next = 0;
    for (const Tensor& t : group) {
      if (table.count == launch::kSumOfSquaresTensors) {
        launches.emplace_back(cuda::dtype_of("sum_of_squares", dtype), table);
        table = launch::SumOfSquaresTable();
        next = 0;
      }
      table.data[table.count] = t.data_ptr();
      table.start[table.count] = next;
      table.numel[table.count] = t.numel();
      ++table.count;
      next += (t.numel() + vec - 1) / vec * vec;  // the next tensor starts on a whole vector
    }
    launches.emplace_back(cuda::dtype_of("sum_of_squares", dtype), table);
  }
  const auto fp32 = tensors.front().options().dtype(at::kFloat);
  // Written whole by the total kernel when there are launches; zero otherwise.
  Tensor total = launches.empty() ? at::zeros({}, fp32) : at::empty({}, fp32);
  if (!launches.empty()) {
    const int blocks = launch::sum_of_squares_blocks();
    const Tensor partials = at::empty({static_cast<int64_t>(launches.size()) * blocks}, fp32);
    for (size_t l = 0; l < launches.size(); ++l) {
      launches[l].second.first_partial = static_cast<int>(l) * blocks;
      cuda::check_launch("sum_of_squares", launch::sum_of_squares(
                                               launches[l].second, launches[l].first,
                                               partials.data_ptr<float>(), cuda::current_stream()));
    }
    cuda::check_launch(
        "sum_of_squares",
        launch::sum_of_squares_total(partials.data_ptr<float>(), static_cast<int>(partials.numel()),
                                     total.data_ptr<float>(), cuda::current_stream()));
  }
  if (!others.empty()) total = total + sum_of_squares_aten(others);
  return total;
}
#endif

}  // namespace

Tensor sum_of_squares(const std::vector<Tensor>& tensors, OptimPath path) {
  if (tensors.empty()) return at::zeros({}, at::kFloat);
  for (const Tensor& t : tensors) {
    TORCH_CHECK(t.defined() && t.is_floating_point(),
                "sum_of_squares: every tensor must be a defined floating tensor");
    TORCH_CHECK(t.device() == tensors.front().device(), "sum_of_squares: a tensor on ", t.device(),
                " beside one on ", tensors.front().device(), "; all must be on one device");
  }
#ifdef LIGER_WITH_CUDA
  if (path == OptimPath::automatic && tensors.front().is_cuda())
    return sum_of_squares_cuda(tensors);
#endif
  return sum_of_squares_aten(tensors);
}

}  // namespace liger::kernels
