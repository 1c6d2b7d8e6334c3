// How much a per-shape choice of cuBLASLt algorithm would gain over what
// ATen runs today (cublasGemmEx, default algorithm) on the GEMMs of one step
// of the 1B bench (configs/bench/llama3_1b_h100.yaml: 8192 tokens, hidden
// 2048, q|k|v 3072, intermediate 8192, vocab 128256, bf16, fp32 accumulate).
// Per shape: cublasGemmEx, cuBLASLt's first heuristic, and the fastest of up
// to 32 heuristic candidates, each the median of 15 runs between CUDA events.
// "sustained": each shape first runs 0.4 s of cublasGemmEx so the GPU sits at
// its power cap (as in a training step), then every candidate is timed as one
// burst of back-to-back runs (~60 ms): what it costs at the capped clock.
// Build and run on the GPU machine (no torch needed):
//   nvcc -O2 -std=c++17 -arch=sm_90a scripts/device/lt_gemm_probe.cu -lcublasLt -lcublas -o /tmp/lt_gemm_probe
//   /tmp/lt_gemm_probe [LAYERS] [sustained]
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#define CHECK_CUDA(x)                                                             \
  do {                                                                            \
    cudaError_t e = (x);                                                          \
    if (e != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)
#define CHECK_BLAS(x)                                                    \
  do {                                                                   \
    cublasStatus_t s = (x);                                              \
    if (s != CUBLAS_STATUS_SUCCESS) {                                    \
      std::fprintf(stderr, "%s:%d cublas status %d\n", __FILE__, __LINE__, (int)s); \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

namespace {

constexpr size_t kWorkspace = 64u << 20;

// One GEMM in row-major terms: C[M,N] = beta C + op(A) op(B), A [M,K] (or
// [K,M] when a_t), B [K,N] (or [N,K] when b_t), C in bf16 or fp32.
struct Shape {
  std::string name;
  int count;
  long m, n, k;
  bool a_t, b_t;
  bool c_fp32;
  float beta;
};

// Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's (m, n) are our
// (N, M) and its first operand is our B.
struct ColMajor {
  cublasOperation_t op_a, op_b;
  long m, n, k, lda, ldb, ldc;
};

ColMajor col_major(const Shape& s) {
  ColMajor c;
  c.m = s.n;
  c.n = s.m;
  c.k = s.k;
  c.op_a = s.b_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.lda = s.b_t ? s.k : s.n;
  c.op_b = s.a_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.ldb = s.a_t ? s.m : s.k;
  c.ldc = s.n;
  return c;
}

float median_ms(const std::function<void()>& fn, int reps = 15, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0.f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

float event_ms(const std::function<void()>& fn, int reps) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  CHECK_CUDA(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) fn();
  CHECK_CUDA(cudaEventRecord(b));
  CHECK_CUDA(cudaEventSynchronize(b));
  float ms = 0.f;
  CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  return ms;
}

// Runs fn back to back for about `ms` milliseconds.
void heat(const std::function<void()>& fn, float ms) {
  const float one = event_ms(fn, 1);
  event_ms(fn, std::max(1, static_cast<int>(ms / std::max(one, 1e-3f))));
}

// Milliseconds per run of a ~60 ms burst of back-to-back runs.
float burst_ms(const std::function<void()>& fn) {
  const float one = event_ms(fn, 1);
  const int reps = std::min(400, std::max(5, static_cast<int>(60.f / std::max(one, 1e-3f))));
  return event_ms(fn, reps) / reps;
}

__global__ void fill(__nv_bfloat16* p, long n, unsigned seed) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = __float2bfloat16((static_cast<float>(x & 0xffff) / 65536.f - 0.5f) * 0.04f);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = argc > 1 ? std::atoi(argv[1]) : 16;
  const bool sustained = argc > 2 && std::string(argv[2]) == "sustained";
  const long T = 8192, H = 2048, QKV = 3072, I = 8192, V = 128256;
  std::vector<Shape> shapes = {
      {"qkv fwd      x Wqkv^T", layers, T, QKV, H, false, true, false, 0.f},
      {"o fwd        a Wo^T", layers, T, H, H, false, true, false, 0.f},
      {"gate/up fwd  x Wg^T", 2 * layers, T, I, H, false, true, false, 0.f},
      {"down fwd     res + h Wd^T", layers, T, H, I, false, true, false, 1.f},
      {"down dgrad   dy Wd", layers, T, I, H, false, false, false, 0.f},
      {"down wgrad   dy^T h", layers, H, I, T, true, false, false, 0.f},
      {"gate/up wgrad dg^T x", 2 * layers, I, H, T, true, false, false, 0.f},
      {"gate dgrad   dg Wg", layers, T, H, I, false, false, false, 0.f},
      {"up dgrad     dx += du Wu", layers, T, H, I, false, false, false, 1.f},
      {"o dgrad      dy Wo", layers, T, H, H, false, false, false, 0.f},
      {"o wgrad      dy^T a", layers, H, H, T, true, false, false, 0.f},
      {"qkv dgrad    dqkv Wqkv", layers, T, H, QKV, false, false, false, 0.f},
      {"qkv wgrad    dqkv^T x", layers, QKV, H, T, true, false, false, 0.f},
      {"head fwd     x E^T (4096)", 2, 4096, V, H, false, true, false, 0.f},
      {"head dgrad   dl E (4096)", 2, 4096, H, V, false, false, false, 0.f},
      {"head wgrad   dl^T x fp32 (4096)", 1, V, H, 4096, true, false, true, 0.f},
      {"head wgrad   += dl^T x fp32", 1, V, H, 4096, true, false, true, 1.f},
      {"head fwd     x E^T (8192)", 0, 8192, V, H, false, true, false, 0.f},
      {"head dgrad   dl E (8192)", 0, 8192, H, V, false, false, false, 0.f},
      {"head wgrad   dl^T x bf16 (8192)", 0, V, H, 8192, true, false, false, 0.f},
  };
  long max_elems = 0;
  for (const Shape& s : shapes) max_elems = std::max({max_elems, s.m * s.k, s.k * s.n, s.m * s.n});
  __nv_bfloat16 *a, *b;
  void* c;
  void* workspace;
  CHECK_CUDA(cudaMalloc(&a, max_elems * 2));
  CHECK_CUDA(cudaMalloc(&b, max_elems * 2));
  CHECK_CUDA(cudaMalloc(&c, max_elems * 4));
  CHECK_CUDA(cudaMalloc(&workspace, kWorkspace));
  fill<<<1024, 256>>>(a, max_elems, 1u);
  fill<<<1024, 256>>>(b, max_elems, 2u);
  CHECK_CUDA(cudaMemset(c, 0, max_elems * 4));
  CHECK_CUDA(cudaDeviceSynchronize());

  cublasHandle_t blas;
  cublasLtHandle_t lt;
  CHECK_BLAS(cublasCreate(&blas));
  CHECK_BLAS(cublasSetWorkspace(blas, workspace, kWorkspace));
  CHECK_BLAS(cublasLtCreate(&lt));

  double total[3] = {0, 0, 0}, flop_total = 0;
  std::printf("%-34s %5s %6s %6s %6s  %8s %8s %8s  %s\n", "gemm", "count", "M", "N", "K", "gemmEx", "lt#0",
              "lt best", "TFLOP/s ex/best, best algo index");
  for (const Shape& s : shapes) {
    const ColMajor g = col_major(s);
    const float alpha = 1.f, beta = s.beta;
    const cudaDataType_t c_type = s.c_fp32 ? CUDA_R_32F : CUDA_R_16BF;
    auto gemm_ex = [&] {
      CHECK_BLAS(cublasGemmEx(blas, g.op_a, g.op_b, g.m, g.n, g.k, &alpha, b, CUDA_R_16BF, g.lda, a, CUDA_R_16BF,
                              g.ldb, &beta, c, c_type, g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP));
    };
    if (sustained) heat(gemm_ex, 400.f);
    const float ex_ms = sustained ? burst_ms(gemm_ex) : median_ms(gemm_ex);

    cublasLtMatmulDesc_t op;
    CHECK_BLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CHECK_BLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &g.op_a, sizeof(g.op_a)));
    CHECK_BLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &g.op_b, sizeof(g.op_b)));
    cublasLtMatrixLayout_t la, lb, lc;
    const bool ta = g.op_a == CUBLAS_OP_T, tb = g.op_b == CUBLAS_OP_T;
    CHECK_BLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? g.k : g.m, ta ? g.m : g.k, g.lda));
    CHECK_BLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? g.n : g.k, tb ? g.k : g.n, g.ldb));
    CHECK_BLAS(cublasLtMatrixLayoutCreate(&lc, c_type, g.m, g.n, g.ldc));
    cublasLtMatmulPreference_t pref;
    CHECK_BLAS(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kWorkspace;
    CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t results[32];
    int found = 0;
    CHECK_BLAS(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 32, results, &found));
    float first_ms = -1.f, best_ms = 1e30f;
    int best = -1;
    for (int i = 0; i < found; ++i) {
      if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
      auto run = [&] {
        CHECK_BLAS(cublasLtMatmul(lt, op, &alpha, b, la, a, lb, &beta, c, lc, c, lc, &results[i].algo, workspace,
                                  kWorkspace, 0));
      };
      const float ms = sustained ? burst_ms(run) : median_ms(run, 9, 2);
      if (i == 0) first_ms = ms;
      if (ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
    const double flop = 2.0 * s.m * s.n * s.k;
    std::printf("%-34s %5d %6ld %6ld %6ld  %8.3f %8.3f %8.3f  %4.0f / %4.0f  #%d of %d\n", s.name.c_str(), s.count,
                s.m, s.n, s.k, ex_ms, first_ms, best_ms, flop / ex_ms / 1e9, flop / best_ms / 1e9, best, found);
    total[0] += s.count * ex_ms;
    total[1] += s.count * first_ms;
    total[2] += s.count * std::min(best_ms, ex_ms);
    flop_total += s.count * flop;
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
  }
  std::printf("step (rows with count > 0): gemmEx %.2f ms, lt#0 %.2f ms, per-shape best of (gemmEx, lt) %.2f ms "
              "for %.1f TFLOP\n",
              total[0], total[1], total[2], flop_total / 1e12);
  return 0;
}
