// The backward of an embedding lookup added into an existing gradient of the
// embedding matrix (a tied embedding: the head's gradient is already there):
//   weight_grad[v, c] = round(float(weight_grad[v, c]) + sum over tokens t with
//                       ids[t] = v of float(grad_out[t, c]))      (fp32 sum)
// Only the rows of ids that occur are touched: no [vocab, hidden] zero fill
// and no second [vocab, hidden] add, as a dense embedding backward needs.
//
// The caller sorts the ids stably (sorted_ids, and order[p]: the token at
// sorted position p), so each id's tokens form one segment of sorted
// positions, in their original order. The positions are cut into chunks of
// kChunk; a segment's piece in a chunk is summed in position order by that
// chunk's block (one thread per hidden column, the chunk's kChunk rows
// loaded before any add).
//  - chunks: a segment that lies inside one chunk is added to its row there.
//    A piece that continues from the previous chunk (the chunk's "head"
//    piece) or into the next (its "tail" piece, when the segment starts in
//    this chunk) goes to partial[chunk][0 or 1] in fp32 instead.
//  - join: the chunk where such a segment starts adds its tail piece and the
//    head pieces of the following chunks, in chunk order, into the row.
// The order of every addition depends only on the ids: the same result run
// after run, with no atomics and no host synchronisation. Memory: one read
// of grad_out, one read and write of each touched row, and fp32 partials
// only for segments that cross a chunk boundary.
#include "kernels/cuda/common.cuh"

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 256;  // hidden columns per block, one per thread
constexpr int kChunk = 8;      // sorted positions per chunk

template <typename W>
__device__ __forceinline__ void add_to_row(W* __restrict__ weight_grad, int64_t id, int64_t hidden,
                                           int64_t c, float sum) {
  W* at = weight_grad + id * hidden + c;
  *at = from_float<W>(to_float(*at) + sum);  // cast: the fp32 sum rounded once into W
}

template <typename G, typename W>
__global__ void __launch_bounds__(kThreads)
    embedding_grad_chunks_kernel(const int64_t* __restrict__ sorted_ids,
                                 const int64_t* __restrict__ order, const G* __restrict__ grad_out,
                                 W* __restrict__ weight_grad, float* __restrict__ partial,
                                 int64_t n, int64_t hidden) {
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= hidden) return;
  const int64_t chunk = blockIdx.x;
  const int64_t first = chunk * kChunk;
  const int count = static_cast<int>(min(static_cast<int64_t>(kChunk), n - first));
  int64_t id[kChunk];
  float g[kChunk];
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {  // every row's load in flight before the adds
    id[i] = i < count ? sorted_ids[first + i] : -1;
    g[i] = i < count ? to_float(grad_out[order[first + i] * hidden + c]) : 0.f;
  }
  const bool continues_in = first > 0 && sorted_ids[first - 1] == id[0];
  const bool continues_out =
      first + count < n && sorted_ids[first + count] == sorted_ids[first + count - 1];
  float* head = partial + (chunk * 2) * hidden + c;
  float* tail = head + hidden;
  float acc = 0.f;
  bool is_head = continues_in;  // the piece being summed began in an earlier chunk
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    if (i < count) {
      acc += g[i];
      const bool last = i + 1 == count;
      if (last || id[i + 1] != id[i]) {  // the piece ends here
        if (is_head) {
          *head = acc;
        } else if (last && continues_out) {
          *tail = acc;
        } else {
          add_to_row(weight_grad, id[i], hidden, c, acc);
        }
        acc = 0.f;
        is_head = false;
      }
    }
  }
}

template <typename W>
__global__ void __launch_bounds__(kThreads)
    embedding_grad_join_kernel(const int64_t* __restrict__ sorted_ids,
                               const float* __restrict__ partial, W* __restrict__ weight_grad,
                               int64_t n, int64_t hidden, int64_t chunks) {
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= hidden) return;
  const int64_t chunk = blockIdx.x;
  const int64_t first = chunk * kChunk;
  const int64_t end = min(first + kChunk, n);
  const int64_t id = sorted_ids[end - 1];
  if (end == n || sorted_ids[end] != id) return;         // no segment continues past this chunk
  if (first > 0 && sorted_ids[first - 1] == id) return;  // it began earlier: its own chunk joins it
  float total = partial[(chunk * 2 + 1) * hidden + c];
  for (int64_t j = chunk + 1; j < chunks && sorted_ids[j * kChunk] == id; ++j) {
    total += partial[(j * 2) * hidden + c];  // chunk j's head piece, in chunk order
  }
  add_to_row(weight_grad, id, hidden, c, total);
}

}  // namespace

int64_t embedding_grad_partial_floats(int64_t tokens, int64_t hidden) {
  return 2 * ((tokens + kChunk - 1) / kChunk) * hidden;
}

cudaError_t embedding_grad_add(const EmbeddingGradAdd& a, cudaStream_t stream) {
  if (a.tokens == 0 || a.hidden == 0) return cudaSuccess;
  if (a.partial == nullptr) return cudaErrorInvalidValue;
  const int64_t chunks = (a.tokens + kChunk - 1) / kChunk;
  const int64_t column_blocks = (a.hidden + kThreads - 1) / kThreads;
  if (chunks > 0x7fffffff || column_blocks > 65535) return cudaErrorInvalidValue;
  // grid: (chunks of kChunk sorted positions, hidden / kThreads); block: kThreads columns
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(column_blocks));
  return dispatch_dtype(a.grad_dtype, [&](auto tg) -> cudaError_t {
    using G = typename decltype(tg)::type;
    return dispatch_dtype(a.weight_dtype, [&](auto tw) -> cudaError_t {
      using W = typename decltype(tw)::type;
      embedding_grad_chunks_kernel<G, W><<<grid, kThreads, 0, stream>>>(
          a.sorted_ids, a.order, static_cast<const G*>(a.grad_out), static_cast<W*>(a.weight_grad),
          a.partial, a.tokens, a.hidden);
      cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
      embedding_grad_join_kernel<W><<<grid, kThreads, 0, stream>>>(
          a.sorted_ids, a.partial, static_cast<W*>(a.weight_grad), a.tokens, a.hidden, chunks);
      return cudaGetLastError();
    });
  });
}

}  // namespace liger::cuda_kernels
