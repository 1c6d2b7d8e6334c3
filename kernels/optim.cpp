// AdamW with optional stochastic rounding: the ATen path (any device, in
// chunks so the fp32 and int64 temporaries stay small) and the dispatch to
// the fused CUDA kernel in CUDA builds.
#include "kernels/optim.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef LIGER_WITH_CUDA
#include "kernels/cuda/binding.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <unordered_set>

namespace liger::kernels {
namespace {

// ---------------------------------------------------------------------------
// Random bits: the function of kernels/cuda/adamw.cu (see the comment there),
//   bits(i) = mix(mix(lo32(i) ^ key_lo) ^ hi32(i) ^ key_hi),
// with the key from (seed, stream, step) by splitmix64 (Steele, Lea and
// Flood's finaliser constants) on the host.
// ---------------------------------------------------------------------------

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Key {
  uint32_t lo = 0, hi = 0;
};

Key rounding_key(uint64_t seed, uint64_t stream, int64_t step) {
  const uint64_t k =
      splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ static_cast<uint64_t>(step));
  return {static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)};
}

constexpr int64_t kMask32 = 0xffffffffLL;

// The 32-bit hash on int64 tensors holding values in [0, 2^32): every
// intermediate stays below 2^63, so no signed overflow. x * c mod 2^32 is
// x * c_lo + ((x * c_hi) mod 2^16) * 2^16 with c = c_hi 2^16 + c_lo (both
// products < 2^48).
Tensor mul32(const Tensor& x, uint32_t c) {
  const int64_t lo = c & 0xffffu, hi = c >> 16;
  Tensor high = (x * hi).bitwise_and_(0xffff).mul_(65536);
  return (x * lo).add_(high).bitwise_and_(kMask32);
}

Tensor mix32(Tensor x) {
  x = x.bitwise_xor(x.bitwise_right_shift(16));
  x = mul32(x, 0x7feb352du);
  x = x.bitwise_xor(x.bitwise_right_shift(15));
  x = mul32(x, 0x846ca68bu);
  return x.bitwise_xor(x.bitwise_right_shift(16));
}

// 16 random bits (int64 in [0, 2^16)) for flat indices [first, first + n).
Tensor random16(int64_t first, int64_t n, Key key, c10::Device device) {
  const Tensor i =
      at::arange(first, first + n, at::TensorOptions().dtype(at::kLong).device(device));
  Tensor h = mix32(i.bitwise_and(kMask32).bitwise_xor_(static_cast<int64_t>(key.lo)));
  h = mix32(h.bitwise_xor_(i.bitwise_right_shift(32)).bitwise_xor_(static_cast<int64_t>(key.hi)));
  return h.bitwise_right_shift(16);  // the top 16 bits
}

// x (contiguous fp32 [n]) rounded to bf16 with the random bits r ([n]): add r
// to the low half of x's fp32 pattern and truncate (see stochastic_bf16 in
// adamw.cu for why that rounds up with probability = the fractional distance).
Tensor round_stochastic(const Tensor& x, const Tensor& r) {
  // The fp32 patterns as unsigned 32-bit values held in int64 (a reinterpretation, not a cast).
  Tensor bits = x.view(at::kInt).to(at::kLong).bitwise_and_(kMask32);
  bits.add_(r).bitwise_and_(0xffff0000LL);
  // Back to the int32 pattern: values >= 2^31 are the negative int32s (no wrap in the conversion).
  bits = at::where(bits >= (int64_t{1} << 31), bits - (int64_t{1} << 32), bits).to(at::kInt);
  const Tensor rounded = at::where(x.isnan(), x, bits.view(at::kFloat));  // NaN stays NaN
  return rounded.to(at::kBFloat16);  // cast: exact, the low 16 bits are zero
}

struct Scalars {
  double decay, step_size, bias_correction2_sqrt;
};

Scalars scalars_of(const AdamWStepOptions& o) {
  Scalars s;
  s.decay = 1.0 - o.lr * o.weight_decay;
  s.step_size = o.lr / (1.0 - std::pow(o.beta1, static_cast<double>(o.step)));
  s.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(o.step)));
  return s;
}

// Elements per chunk of the ATen path: bounds its fp32/int64 temporaries.
constexpr int64_t kChunk = int64_t{1} << 20;

void adamw_aten(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWStepOptions& o) {
  const Scalars s = scalars_of(o);
  const bool stochastic = o.stochastic_rounding && param.scalar_type() == at::kBFloat16;
  const Key key = rounding_key(o.seed, o.stream, o.step);
  // A strided parameter is updated in a contiguous copy, written back at the end.
  const Tensor p = param.is_contiguous() ? param : param.contiguous();
  const Tensor pf = p.view(-1), mf = exp_avg.view(-1), vf = exp_avg_sq.view(-1);
  const Tensor gf = grad.reshape(-1);
  const Tensor cf = o.compute_copy.defined() ? o.compute_copy.view(-1) : Tensor();
  const int64_t n = pf.numel();
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t len = std::min(kChunk, n - start);
    Tensor ps = pf.narrow(0, start, len), ms = mf.narrow(0, start, len),
           vs = vf.narrow(0, start, len);
    // cast: every operand to fp32 for the math (an alias when already fp32: only read here)
    Tensor g = gf.narrow(0, start, len).to(at::kFloat);
    if (o.grad_scale.defined()) g = g * o.grad_scale;  // fp32 times the fp32 scale
    const Tensor m = ms.to(at::kFloat).mul(o.beta1).add_(g, 1.0 - o.beta1);
    const Tensor v = vs.to(at::kFloat).mul(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
    const Tensor denom = v.sqrt().div_(s.bias_correction2_sqrt).add_(o.eps);
    const Tensor p32 = ps.to(at::kFloat).mul(s.decay).addcdiv_(m, denom, -s.step_size);
    ms.copy_(m);  // cast: fp32 to the state dtype, to nearest
    vs.copy_(v);  // cast: fp32 to the state dtype, to nearest
    if (stochastic) {
      ps.copy_(round_stochastic(p32, random16(start, len, key, p32.device())));  // bf16 to bf16
    } else {
      ps.copy_(p32);  // cast: fp32 to the parameter dtype, to nearest
    }
    if (cf.defined())
      cf.narrow(0, start, len).copy_(p32);  // cast: fp32 to the copy's 16-bit dtype, to nearest
  }
  if (!p.is_same(param)) param.copy_(p);
}

void check_args(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWStepOptions& o) {
  TORCH_CHECK(param.defined() && grad.defined() && exp_avg.defined() && exp_avg_sq.defined(),
              "adamw_step: param, grad, exp_avg and exp_avg_sq must all be defined");
  const auto dtype = param.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "adamw_step: param must be float32, bfloat16 or float16, got ", dtype);
  const bool sixteen_bit_grad =
      grad.scalar_type() == at::kBFloat16 || grad.scalar_type() == at::kHalf;
  TORCH_CHECK(grad.scalar_type() == dtype || grad.scalar_type() == at::kFloat ||
                  (dtype == at::kFloat && sixteen_bit_grad),
              "adamw_step: grad must be ", dtype, " (the parameter's dtype) or float32",
              dtype == at::kFloat ? " (or a compute copy's bfloat16/float16)" : "", ", got ",
              grad.scalar_type());
  if (o.compute_copy.defined()) {
    const Tensor& c = o.compute_copy;
    TORCH_CHECK(
        dtype == at::kFloat && (c.scalar_type() == at::kBFloat16 || c.scalar_type() == at::kHalf),
        "adamw_step: compute_copy must be bfloat16 or float16 beside a float32 parameter, got ",
        c.scalar_type(), " beside ", dtype);
    TORCH_CHECK(c.numel() == param.numel() && c.device() == param.device() && c.is_contiguous(),
                "adamw_step: compute_copy must be contiguous, of the parameter's ", param.numel(),
                " elements on ", param.device(), ", got ", c.numel(), " on ", c.device());
  }
  for (const Tensor* t : {&grad, &exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(t->numel() == param.numel(), "adamw_step: a tensor of ", t->numel(),
                " elements does not match the parameter's ", param.numel(), " (", param.sizes(),
                ")");
    TORCH_CHECK(t->device() == param.device(), "adamw_step: a tensor on ", t->device(),
                " does not match the parameter's device ", param.device());
  }
  for (const Tensor* t : {&exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(t->scalar_type() == dtype && t->is_contiguous(),
                "adamw_step: exp_avg and exp_avg_sq must be contiguous ", dtype,
                " (the parameter's dtype), got ", t->scalar_type());
  }
  TORCH_CHECK(o.step >= 1, "adamw_step: step counts updates from 1, got ", o.step);
  TORCH_CHECK(
      !o.step_values.defined() ||
          (o.step_values.scalar_type() == at::kByte && o.step_values.is_contiguous() &&
           o.step_values.numel() == static_cast<int64_t>(sizeof(AdamWStepValues)) &&
           o.step_values.device() == param.device() &&
           reinterpret_cast<uintptr_t>(o.step_values.data_ptr()) % alignof(AdamWStepValues) == 0),
      "adamw_step: step_values must be ", sizeof(AdamWStepValues),
      " contiguous, aligned uint8 bytes on the parameter's device");
  TORCH_CHECK(!o.grad_scale.defined() ||
                  (o.grad_scale.numel() == 1 && o.grad_scale.scalar_type() == at::kFloat &&
                   o.grad_scale.device() == param.device()),
              "adamw_step: grad_scale must be one float32 element on the parameter's device");
}

#ifdef LIGER_WITH_CUDA
// The fused kernel: one launch on the current stream. Any alignment (the
// kernel falls back to single-element accesses); a strided gradient is copied.
void adamw_cuda(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWStepOptions& o) {
  namespace launch = ::liger::cuda_kernels;
  const c10::cuda::CUDAGuard guard(param.device());
  const Tensor g = grad.contiguous();
  const Scalars s = scalars_of(o);
  const Key key = rounding_key(o.seed, o.stream, o.step);
  launch::AdamWStep a;
  a.param = param.data_ptr();
  a.grad = g.data_ptr();
  a.exp_avg = exp_avg.data_ptr();
  a.exp_avg_sq = exp_avg_sq.data_ptr();
  if (o.compute_copy.defined()) {
    a.compute_copy = o.compute_copy.data_ptr();
    a.copy_dtype = cuda::dtype_of("adamw_step", o.compute_copy);
  }
  a.n = param.numel();
  a.param_dtype = cuda::dtype_of("adamw_step", param);
  a.grad_dtype = cuda::dtype_of("adamw_step", g);
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.decay = s.decay;
  a.step_size = s.step_size;
  a.bias_correction2_sqrt = s.bias_correction2_sqrt;
  a.stochastic_rounding = o.stochastic_rounding;
  a.key_lo = key.lo;
  a.key_hi = key.hi;
  a.grad_scale = o.grad_scale.defined() ? o.grad_scale.data_ptr<float>() : nullptr;
  a.step_values = o.step_values.defined()
                      ? static_cast<const AdamWStepValues*>(o.step_values.data_ptr())
                      : nullptr;
  cuda::check_launch("adamw_step", launch::adamw_step(a, cuda::current_stream()));
}

// Whether the multi-tensor kernel takes this (checked) update: a non-empty
// CUDA tensor, every buffer contiguous and 16-byte aligned.
bool fits_table(const AdamWUpdate& u) {
  namespace launch = ::liger::cuda_kernels;
  const Tensor& c = u.options.compute_copy;
  return u.param.is_cuda() && u.param.numel() > 0 && u.param.is_contiguous() &&
         u.grad.is_contiguous() && launch::aligned16(u.param.data_ptr()) &&
         launch::aligned16(u.grad.data_ptr()) && launch::aligned16(u.exp_avg.data_ptr()) &&
         launch::aligned16(u.exp_avg_sq.data_ptr()) &&
         (!c.defined() || launch::aligned16(c.data_ptr()));
}

uint64_t bits_of(double x) {
  uint64_t b = 0;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

// The updates that may share a launch: one device, the dtypes of parameter,
// gradient and compute copy (-1: none), the rounding, the betas and eps (as
// bit patterns: a total order whatever the values) and the grad_scale.
using TableKey = std::tuple<int, int, int, int, bool, uint64_t, uint64_t, uint64_t, uintptr_t>;

TableKey table_key(const AdamWUpdate& u) {
  const AdamWStepOptions& o = u.options;
  const bool bf16 = u.param.scalar_type() == at::kBFloat16;
  return {u.param.get_device(),
          static_cast<int>(u.param.scalar_type()),
          static_cast<int>(u.grad.scalar_type()),
          o.compute_copy.defined() ? static_cast<int>(o.compute_copy.scalar_type()) : -1,
          o.stochastic_rounding && bf16,
          bits_of(o.beta1),
          bits_of(o.beta2),
          bits_of(o.eps),
          reinterpret_cast<uintptr_t>(o.grad_scale.defined() ? o.grad_scale.data_ptr() : nullptr)};
}

// Launches of the multi-tensor kernel over `group` (indices into `updates`,
// all of one TableKey), kAdamWTableTensors at a time.
void adamw_cuda_tables(const std::vector<AdamWUpdate>& updates, const std::vector<size_t>& group) {
  namespace launch = ::liger::cuda_kernels;
  const AdamWUpdate& head = updates[group.front()];
  const AdamWStepOptions& ho = head.options;
  const c10::cuda::CUDAGuard guard(head.param.device());
  launch::AdamWTable table;
  table.param_dtype = cuda::dtype_of("adamw_step_many", head.param);
  table.grad_dtype = cuda::dtype_of("adamw_step_many", head.grad);
  table.compute_copies = ho.compute_copy.defined();
  if (table.compute_copies) table.copy_dtype = cuda::dtype_of("adamw_step_many", ho.compute_copy);
  table.stochastic_rounding = ho.stochastic_rounding;
  table.beta1 = ho.beta1;
  table.beta2 = ho.beta2;
  table.eps = ho.eps;
  table.grad_scale = ho.grad_scale.defined() ? ho.grad_scale.data_ptr<float>() : nullptr;
  for (size_t j = 0; j < group.size(); ++j) {
    const AdamWUpdate& u = updates[group[j]];
    const AdamWStepOptions& o = u.options;
    launch::AdamWTableTensor& e = table.tensors[table.count++];
    e.param = u.param.data_ptr();
    e.grad = u.grad.data_ptr();
    e.exp_avg = u.exp_avg.data_ptr();
    e.exp_avg_sq = u.exp_avg_sq.data_ptr();
    e.compute_copy = o.compute_copy.defined() ? o.compute_copy.data_ptr() : nullptr;
    e.n = u.param.numel();
    e.values = adamw_step_values(o);  // fp32, as adamw_cuda's launch rounds its double scalars
    e.step_values = o.step_values.defined()
                        ? static_cast<const AdamWStepValues*>(o.step_values.data_ptr())
                        : nullptr;
    if (table.count == launch::kAdamWTableTensors || j + 1 == group.size()) {
      cuda::check_launch("adamw_step_many",
                         launch::adamw_step_table(table, cuda::current_stream()));
      table.count = 0;
    }
  }
}
#endif

}  // namespace

AdamWStepValues adamw_step_values(const AdamWStepOptions& options) {
  const Scalars s = scalars_of(options);
  const Key key = rounding_key(options.seed, options.stream, options.step);
  AdamWStepValues v;
  // cast: the host's double scalars to fp32, as kernels/cuda/adamw.cu casts its launch arguments
  v.decay = static_cast<float>(s.decay);
  v.step_size = static_cast<float>(s.step_size);
  v.inv_bias_correction2_sqrt = static_cast<float>(1.0 / s.bias_correction2_sqrt);
  v.key_lo = key.lo;
  v.key_hi = key.hi;
  return v;
}

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWStepOptions& options, OptimPath path) {
  check_args(param, grad, exp_avg, exp_avg_sq, options);
  if (param.numel() == 0) return;
#ifdef LIGER_WITH_CUDA
  if (path == OptimPath::automatic && param.is_cuda() && param.is_contiguous()) {
    adamw_cuda(param, grad, exp_avg, exp_avg_sq, options);
    return;
  }
#endif
  // The ATen path computes with the host fields; device-side step values
  // would be ignored, which a graph replay could not notice.
  TORCH_CHECK(!options.step_values.defined() || !param.is_cuda(),
              "adamw_step: step_values needs the fused CUDA kernel (a contiguous CUDA parameter, "
              "path automatic)");
  adamw_aten(param, grad, exp_avg, exp_avg_sq, options);
}

void adamw_step_many(const std::vector<AdamWUpdate>& updates, OptimPath path) {
  std::unordered_set<const void*> params;
  for (const AdamWUpdate& u : updates) {
    check_args(u.param, u.grad, u.exp_avg, u.exp_avg_sq, u.options);
    TORCH_CHECK(u.param.numel() == 0 || params.insert(u.param.data_ptr()).second,
                "adamw_step_many: a parameter of ", u.param.sizes(),
                " appears twice; each may be stepped once");
  }
  std::vector<size_t> alone;  // the updates that take adamw_step
#ifdef LIGER_WITH_CUDA
  std::map<TableKey, std::vector<size_t>> tables;  // the multi-tensor kernel's, by launch
#endif
  for (size_t k = 0; k < updates.size(); ++k) {
#ifdef LIGER_WITH_CUDA
    if (path == OptimPath::automatic && fits_table(updates[k])) {
      tables[table_key(updates[k])].push_back(k);
      continue;
    }
#endif
    alone.push_back(k);
  }
#ifdef LIGER_WITH_CUDA
  for (const auto& entry : tables) adamw_cuda_tables(updates, entry.second);
#endif
  for (size_t k : alone) {
    const AdamWUpdate& u = updates[k];
    adamw_step(u.param, u.grad, u.exp_avg, u.exp_avg_sq, u.options, path);
  }
}

Tensor stochastic_round_bf16(const Tensor& x, uint64_t seed, uint64_t stream, int64_t step) {
  TORCH_CHECK(x.is_floating_point(), "stochastic_round_bf16: x must be floating point, got ",
              x.scalar_type());
  const Tensor flat =
      x.to(at::kFloat).contiguous().view(-1);  // cast: to fp32, exact from bf16/fp16
  const Key key = rounding_key(seed, stream, step);
  return round_stochastic(flat, random16(0, flat.numel(), key, flat.device())).view(x.sizes());
}

}  // namespace liger::kernels
