// The tuned GEMM (see tuned_gemm.h). cuBLAS and cuBLASLt are the copies the
// process already loaded (torch's): their entry points are looked up by name
// at first use, so this library adds no second cuBLAS to the process.
//
// Row-major D = A' B' is column-major D^T = B'^T A'^T: cuBLAS's (m, n) are our
// (n, m), its first operand is our B and its second our A, each with the
// transpose flag it has in our terms; every leading dimension is our row
// stride.
#include "kernels/cuda/tuned_gemm.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>

namespace liger::cuda_kernels {
namespace {

// ---------------------------------------------------------------------------
// cuBLAS entry points, from the libraries already in the process
// ---------------------------------------------------------------------------

// cublasGemmEx has an overload (a legacy-argument inline one): its pointer type spelled out.
using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                    int, const void*, const void*, cudaDataType, int, const void*,
                                    cudaDataType, int, const void*, void*, cudaDataType, int,
                                    cublasComputeType_t, cublasGemmAlgo_t);

struct Blas {
  GemmExFn gemm_ex = nullptr;
  decltype(&cublasGetMathMode) get_math_mode = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  bool complete = false;
};

template <typename F>
void find(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

const Blas& blas() {
  static const Blas b = [] {
    Blas x;
    find(x.gemm_ex, "cublasGemmEx");
    find(x.get_math_mode, "cublasGetMathMode");
    find(x.set_math_mode, "cublasSetMathMode");
    find(x.desc_create, "cublasLtMatmulDescCreate");
    find(x.desc_destroy, "cublasLtMatmulDescDestroy");
    find(x.desc_set, "cublasLtMatmulDescSetAttribute");
    find(x.layout_create, "cublasLtMatrixLayoutCreate");
    find(x.layout_destroy, "cublasLtMatrixLayoutDestroy");
    find(x.pref_create, "cublasLtMatmulPreferenceCreate");
    find(x.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    find(x.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    find(x.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    find(x.matmul, "cublasLtMatmul");
    x.complete = x.gemm_ex && x.get_math_mode && x.set_math_mode && x.desc_create &&
                 x.desc_destroy && x.desc_set && x.layout_create && x.layout_destroy &&
                 x.pref_create && x.pref_destroy && x.pref_set && x.heuristic && x.matmul;
    return x;
  }();
  return b;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

const char* dtype_name(DType t) {
  return t == DType::f32 ? "f32" : t == DType::f16 ? "f16" : "bf16";
}

// Bytes of alignment (16, 8, 4 or 2) every row start of a buffer has.
int64_t alignment(const void* p, int64_t ld, DType t) {
  const auto bits = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)) |
                    static_cast<uint64_t>(ld) * dtype_size(t);
  int64_t a = 16;
  while (a > 1 && bits % static_cast<uint64_t>(a) != 0) a /= 2;
  return a;
}

// ---------------------------------------------------------------------------
// Plans: per shape, the descriptors and the chosen algorithm
// ---------------------------------------------------------------------------

using Key = std::array<int64_t, 16>;

Key key_of(const TunedGemm& g) {
  int device = -1;
  cudaGetDevice(&device);
  return {
      device,
      g.m,
      g.n,
      g.k,
      g.lda,
      g.ldb,
      g.ldc,
      g.ldd,
      g.a_transposed,
      g.b_transposed,
      static_cast<int64_t>(g.ab_dtype),
      static_cast<int64_t>(g.out_dtype),
      g.c != nullptr,
      std::min(alignment(g.a, g.lda, g.ab_dtype), alignment(g.b, g.ldb, g.ab_dtype)),
      std::min(alignment(g.d, g.ldd, g.out_dtype), g.c ? alignment(g.c, g.ldc, g.out_dtype) : 16),
      static_cast<int64_t>(g.c == g.d)};
}

// The column-major problem cuBLAS sees.
struct ColMajor {
  cublasOperation_t op_first, op_second;  // of our B, of our A
  int64_t m, n, k;                        // cuBLAS's: our n, m, k
};

ColMajor col_major(const TunedGemm& g) {
  return {g.b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, g.a_transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
          g.n, g.m, g.k};
}

struct Plan {
  bool use_lt = false;
  cublasLtMatmulAlgo_t algo{};
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, c = nullptr, d = nullptr;
};

// Descriptors of the cuBLASLt problem (a plan owns them for the process's life).
bool make_lt_problem(const Blas& b, const TunedGemm& g, Plan& p) {
  const ColMajor cm = col_major(g);
  if (b.desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return false;
  b.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &cm.op_first, sizeof(cm.op_first));
  b.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &cm.op_second, sizeof(cm.op_second));
  const bool t1 = cm.op_first == CUBLAS_OP_T, t2 = cm.op_second == CUBLAS_OP_T;
  const cudaDataType_t ab = cuda_type(g.ab_dtype), out = cuda_type(g.out_dtype);
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  return b.layout_create(&p.first, ab, u(t1 ? cm.k : cm.m), u(t1 ? cm.m : cm.k), g.ldb) ==
             CUBLAS_STATUS_SUCCESS &&
         b.layout_create(&p.second, ab, u(t2 ? cm.n : cm.k), u(t2 ? cm.k : cm.n), g.lda) ==
             CUBLAS_STATUS_SUCCESS &&
         b.layout_create(&p.c, out, u(cm.m), u(cm.n), g.c ? g.ldc : g.ldd) ==
             CUBLAS_STATUS_SUCCESS &&
         b.layout_create(&p.d, out, u(cm.m), u(cm.n), g.ldd) == CUBLAS_STATUS_SUCCESS;
}

// cublasGemmEx's C is its D: a C elsewhere is first copied into `d` (as ATen's addmm does).
cudaError_t copy_c(const TunedGemm& g, void* d, cudaStream_t stream) {
  if (g.c == nullptr || g.c == d) return cudaSuccess;
  const size_t e = dtype_size(g.out_dtype);
  return cudaMemcpy2DAsync(d, g.ldd * e, g.c, g.ldc * e, g.n * e, g.m, cudaMemcpyDeviceToDevice,
                           stream);
}

// d = A' B' (+ d, when the product has a C) through cublasGemmEx.
cublasStatus_t run_gemm_ex(const Blas& b, const TunedGemm& g, void* d) {
  const ColMajor cm = col_major(g);
  const float alpha = 1.f, beta = g.c ? 1.f : 0.f;
  auto handle = static_cast<cublasHandle_t>(g.blas_handle);
  // fp32 partial sums in any split-K (no reduction in a 16-bit type); no TF32.
  cublasMath_t before = CUBLAS_DEFAULT_MATH;
  b.get_math_mode(handle, &before);
  const cublasMath_t mode =
      g.ab_dtype == DType::f32
          ? CUBLAS_DEFAULT_MATH
          : static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                      CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  b.set_math_mode(handle, mode);
  const cublasStatus_t s = b.gemm_ex(
      handle, cm.op_first, cm.op_second, static_cast<int>(cm.m), static_cast<int>(cm.n),
      static_cast<int>(cm.k), &alpha, g.b, cuda_type(g.ab_dtype), static_cast<int>(g.ldb), g.a,
      cuda_type(g.ab_dtype), static_cast<int>(g.lda), &beta, d, cuda_type(g.out_dtype),
      static_cast<int>(g.ldd), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP);
  b.set_math_mode(handle, before);
  return s;
}

cublasStatus_t run_lt(const Blas& b, const TunedGemm& g, const Plan& p,
                      const cublasLtMatmulAlgo_t& algo, void* d, cudaStream_t stream) {
  const float alpha = 1.f, beta = g.c ? 1.f : 0.f;
  return b.matmul(static_cast<cublasLtHandle_t>(g.blas_lt_handle), p.desc, &alpha, g.b, p.first,
                  g.a, p.second, &beta, g.c ? g.c : d, p.c, d, p.d, &algo, g.workspace,
                  g.workspace_bytes, stream);
}

// Milliseconds of `reps` back-to-back runs of `run` on `stream`, between two
// events; negative when a run or an event call fails.
template <typename Run>
float burst_ms(Run&& run, int reps, cudaStream_t stream) {
  cudaEvent_t start, stop;
  if (cudaEventCreate(&start) != cudaSuccess) return -1.f;
  if (cudaEventCreate(&stop) != cudaSuccess) {
    cudaEventDestroy(start);
    return -1.f;
  }
  bool ok = cudaEventRecord(start, stream) == cudaSuccess;
  for (int i = 0; ok && i < reps; ++i) ok = run();
  float ms = -1.f;
  ok = ok && cudaEventRecord(stop, stream) == cudaSuccess &&
       cudaEventSynchronize(stop) == cudaSuccess &&
       cudaEventElapsedTime(&ms, start, stop) == cudaSuccess;
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ok ? ms : -1.f;
}

// Time per run under sustained load: a training step keeps the GPU at its
// power cap (an H200 at 700 W runs its SMs near 1600 of 1980 MHz), where the
// fastest algorithm is the one spending the least energy, not the one that
// wins a short run at the boost clock. So each candidate runs as one burst of
// back-to-back products of about kBurstMs, right after the shape's heating
// (kHeatMs of cublasGemmEx): the per-run time at the capped clock. Negative
// when a run fails.
constexpr float kHeatMs = 200.f, kBurstMs = 30.f;

template <typename Run>
float sustained_ms(Run&& run, cudaStream_t stream) {
  const float one = burst_ms(run, 1, stream);  // also the warm-up
  if (one < 0.f) return -1.f;
  const int reps = std::clamp(static_cast<int>(kBurstMs / std::max(one, 1e-3f)), 3, 500);
  const float total = burst_ms(run, reps, stream);
  return total < 0.f ? -1.f : total / static_cast<float>(reps);
}

template <typename Run>
void heat(Run&& run, cudaStream_t stream) {
  const float one = burst_ms(run, 1, stream);
  if (one > 0.f) burst_ms(run, std::clamp(static_cast<int>(kHeatMs / one), 1, 5000), stream);
}

struct Registry {
  std::mutex mutex;
  std::map<Key, std::unique_ptr<Plan>> plans;
  std::vector<std::string> notes;
};

Registry& registry() {
  static Registry r;
  return r;
}

// Times cublasGemmEx and the cuBLASLt candidates, writing D (or scratch when
// C is D); the fastest becomes the plan. Returns false (and `error`) when
// nothing ran.
bool tune(const Blas& b, const TunedGemm& g, cudaStream_t stream, Plan& plan, std::string& note,
          std::string& error) {
  void* out = g.c != nullptr && g.c == g.d ? g.scratch : g.d;
  // cublasGemmEx with C elsewhere pays the copy of C into D (as the product will).
  const auto gemm_ex = [&] {
    const bool copied = g.c == nullptr || g.c == g.d || copy_c(g, out, stream) == cudaSuccess;
    return copied && run_gemm_ex(b, g, out) == CUBLAS_STATUS_SUCCESS;
  };
  heat(gemm_ex, stream);
  const float ex_ms = sustained_ms(gemm_ex, stream);
  float best_ms = ex_ms;
  int best = -1, found = 0;
  std::array<cublasLtMatmulHeuristicResult_t, 16> results{};
  if (make_lt_problem(b, g, plan)) {
    cublasLtMatmulPreference_t pref = nullptr;
    if (b.pref_create(&pref) == CUBLAS_STATUS_SUCCESS) {
      const uint64_t ws = g.workspace_bytes;
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      // Split-K sums in fp32 (the compute type), never in a 16-bit output type.
      const uint32_t schemes =
          CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes));
      const auto align = [](int64_t v) { return static_cast<uint32_t>(v); };
      const uint32_t a_align = align(alignment(g.b, g.ldb, g.ab_dtype));  // cuBLAS's A is our B
      const uint32_t b_align = align(alignment(g.a, g.lda, g.ab_dtype));
      const uint32_t c_align =
          align(g.c ? alignment(g.c, g.ldc, g.out_dtype) : alignment(out, g.ldd, g.out_dtype));
      const uint32_t d_align =
          align(std::min(alignment(g.d, g.ldd, g.out_dtype), alignment(out, g.ldd, g.out_dtype)));
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a_align, sizeof(a_align));
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b_align, sizeof(b_align));
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c_align, sizeof(c_align));
      b.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &d_align, sizeof(d_align));
      if (b.heuristic(static_cast<cublasLtHandle_t>(g.blas_lt_handle), plan.desc, plan.first,
                      plan.second, plan.c, plan.d, pref, static_cast<int>(results.size()),
                      results.data(), &found) != CUBLAS_STATUS_SUCCESS) {
        found = 0;
      }
      b.pref_destroy(pref);
    }
  }
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > g.workspace_bytes)
      continue;
    const float ms = sustained_ms(
        [&] { return run_lt(b, g, plan, results[i].algo, out, stream) == CUBLAS_STATUS_SUCCESS; },
        stream);
    if (ms >= 0.f && (best_ms < 0.f || ms < best_ms)) {
      best_ms = ms;
      best = i;
    }
  }
  cudaGetLastError();  // a failed candidate leaves nothing behind
  if (best_ms < 0.f) {
    error = "neither cublasGemmEx nor any cuBLASLt algorithm ran this shape";
    return false;
  }
  plan.use_lt = best >= 0;
  if (plan.use_lt) plan.algo = results[best].algo;
  char shape[128], choice[128];
  std::snprintf(shape, sizeof(shape), "gemm %lldx%lldx%lld %s%s %s->%s%s",
                static_cast<long long>(g.m), static_cast<long long>(g.n),
                static_cast<long long>(g.k), g.a_transposed ? "T" : "N", g.b_transposed ? "T" : "N",
                dtype_name(g.ab_dtype), dtype_name(g.out_dtype), g.c ? " +C" : "");
  if (plan.use_lt) {
    std::snprintf(choice, sizeof(choice),
                  "cublasLt algorithm %d of %d, %.3f ms (cublasGemmEx %.3f ms)", best + 1, found,
                  best_ms, ex_ms);
  } else {
    std::snprintf(choice, sizeof(choice),
                  "cublasGemmEx %.3f ms (none of %d cublasLt algorithms faster)", ex_ms, found);
  }
  note = std::string(shape) + ": " + choice;
  return true;
}

bool supported(const TunedGemm& g) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  const bool dtypes = g.out_dtype == g.ab_dtype || g.out_dtype == DType::f32;
  return dtypes && g.m > 0 && g.n > 0 && g.k > 0 && g.m <= kMax && g.n <= kMax && g.k <= kMax &&
         g.lda <= kMax && g.ldb <= kMax && g.ldc <= kMax && g.ldd <= kMax && g.blas_handle &&
         g.blas_lt_handle && blas().complete;
}

}  // namespace

bool tuned_gemm_has_plan(const TunedGemm& g) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.plans.count(key_of(g)) > 0;
}

TunedGemmResult tuned_gemm(const TunedGemm& g, cudaStream_t stream) {
  TunedGemmResult result;
  if (!supported(g)) {
    result.status = TunedGemmStatus::unsupported;
    return result;
  }
  const Blas& b = blas();
  const Key key = key_of(g);
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.plans.find(key);
  if (it == r.plans.end()) {
    if (g.c != nullptr && g.c == g.d && g.scratch == nullptr) {
      result.status = TunedGemmStatus::needs_scratch;
      return result;
    }
    auto plan = std::make_unique<Plan>();
    std::string note;
    if (!tune(b, g, stream, *plan, note, result.error)) {
      result.status = TunedGemmStatus::failed;
      return result;
    }
    r.notes.push_back(note);
    it = r.plans.emplace(key, std::move(plan)).first;
  }
  const Plan& plan = *it->second;
  cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
  if (plan.use_lt) {
    s = run_lt(b, g, plan, plan.algo, g.d, stream);
  } else {
    const cudaError_t e = copy_c(g, g.d, stream);
    if (e != cudaSuccess) {
      result.status = TunedGemmStatus::failed;
      result.error = std::string("copy of C: ") + cudaGetErrorString(e);
      return result;
    }
    TunedGemm in_place = g;
    if (g.c != nullptr) in_place.c = g.d;  // C now sits in D
    s = run_gemm_ex(b, in_place, g.d);
  }
  if (s != CUBLAS_STATUS_SUCCESS) {
    result.status = TunedGemmStatus::failed;
    result.error = std::string(plan.use_lt ? "cublasLtMatmul" : "cublasGemmEx") +
                   " returned status " + std::to_string(static_cast<int>(s));
  }
  return result;
}

std::vector<std::string> take_tuned_gemm_notes() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> out;
  out.swap(r.notes);
  return out;
}

}  // namespace liger::cuda_kernels
