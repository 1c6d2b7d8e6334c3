// Composite attention. Plain causal or non-causal attention (what SDPA can
// mask) is ATen's SDPA, as on the reference backend. Everything else (a
// sliding window, a tanh softcap, document ids, a causal query block at the
// end of a KV cache) is exact attention in chunks of query rows: each chunk
// scores only the keys it can see, the per-row log-sum-exp is kept, and
// backward recomputes the probabilities from it. Nothing of size [Tq, Tk] is
// ever held: the working memory is two or three fp32 [B, Hq, rows, keys]
// blocks of one chunk (kernels/attention_chunks.h sizes them) and O(T) buffers.
#include "kernels/attention_chunks.h"
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The options of the chunked path in plain values (an autograd Function
// keeps them in saved_data, whose IValues hold no struct).
struct ChunkedOptions {
  bool causal = true;
  double scale = 1.0;  // resolved: never 0
  int64_t window = 0;
  double softcap = 0.0;
  int64_t chunk_rows = 1;
};

// Keys [begin, end) that query rows [row, row + rows) may see. Row r is
// position r + Tk - Tq (the queries are the last Tq positions); causal: keys
// up to the chunk's last position; a window w: keys from the chunk's first
// position - w + 1 on. Rows inside the range still mask what they may not see.
struct KeyRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

KeyRange visible_keys(int64_t row, int64_t rows, int64_t tq, int64_t tk, const ChunkedOptions& o) {
  const int64_t offset = tk - tq;
  KeyRange keys;
  keys.end = o.causal ? row + rows + offset : tk;
  keys.begin = o.window > 0 ? std::max<int64_t>(0, row + offset - o.window + 1) : 0;
  return keys;
}

// Which keys of `keys` each query row of the chunk may see, as the reference
// defines it: query position i sees key j iff (not causal or j <= i) and (no
// window or i - j < window) and (no documents or both in the same document).
// A [rows, keys] bool mask, [B, 1, 1, rows, keys] with documents (broadcast
// over [B, Hk, G, rows, keys]), or undefined when every key is visible.
Tensor visible_mask(int64_t row, int64_t rows, KeyRange keys, int64_t offset,
                    const ChunkedOptions& o, const Tensor& documents, c10::Device device) {
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  const Tensor i = at::arange(row + offset, row + rows + offset, long_options).unsqueeze(1);
  const Tensor j = at::arange(keys.begin, keys.end, long_options).unsqueeze(0);
  Tensor allowed;
  if (o.causal) allowed = j.le(i);
  if (o.window > 0) allowed = allowed & (i - j).lt(o.window);  // the window needs causal
  if (documents.defined()) {
    // Tq == Tk here (checked): rows and positions coincide.
    const Tensor same = documents.narrow(1, row, rows)
                            .unsqueeze(2)
                            .eq(documents.narrow(1, keys.begin, keys.size()).unsqueeze(1));
    allowed = allowed.defined() ? allowed.unsqueeze(0) & same : same;  // [B, rows, keys]
    allowed = allowed.unsqueeze(1).unsqueeze(1);
  }
  return allowed;
}

// k or v [B, T, Hk, D] as [B, Hk, T, D] in fp32 (one copy; the math is fp32).
Tensor heads_first_fp32(const Tensor& x) {
  Tensor out =
      at::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, x.options().dtype(at::kFloat));
  out.copy_(x.transpose(1, 2));  // cast: to fp32
  return out;
}

// Rows [row, row + rows) of x [B, Tq, Hq, D] grouped by key/value head:
// [B, Hk, G * rows, D] in fp32, query head h * G + g of key/value head h at
// rows g * rows .. g * rows + rows - 1 (HF's repeat_kv order). One matmul per
// key/value head then serves its G query heads without repeating k or v.
Tensor grouped_rows(const Tensor& x, int64_t row, int64_t rows, int64_t heads_k) {
  const int64_t b = x.size(0), groups = x.size(2) / heads_k, d = x.size(3);
  Tensor out = at::empty({b, heads_k, groups, rows, d}, x.options().dtype(at::kFloat));
  // cast: to fp32
  out.copy_(x.narrow(1, row, rows).reshape({b, rows, heads_k, groups, d}).permute({0, 2, 3, 1, 4}));
  return out.view({b, heads_k, groups * rows, d});
}

// The inverse of grouped_rows: writes chunk [B, Hk, G * rows, D] into rows
// [row, row + rows) of y [B, Tq, Hq, D] (contiguous), cast to y's dtype.
void scatter_rows(const Tensor& chunk, Tensor& y, int64_t row, int64_t rows, int64_t heads_k) {
  const int64_t b = y.size(0), groups = y.size(2) / heads_k, d = y.size(3);
  // cast: fp32 to y's dtype (the op's output or q's gradient)
  y.narrow(1, row, rows)
      .view({b, rows, heads_k, groups, d})
      .copy_(chunk.view({b, heads_k, groups, rows, d}).permute({0, 3, 1, 2, 4}));
}

// One chunk's scores with the masked keys at -inf, [B, Hk, G * rows, keys] in
// fp32: s = q k^T * scale, then s <- c * tanh(s / c) with softcap c. With a
// softcap and `slope` given, also d s_capped / d s = 1 - tanh^2 there.
Tensor chunk_scores(const Tensor& q_rows, const Tensor& k_keys, const Tensor& mask,
                    const ChunkedOptions& o, Tensor* slope) {
  Tensor s = at::matmul(q_rows, k_keys.transpose(-1, -2)).mul_(o.scale);
  if (o.softcap > 0.0) {
    s.div_(o.softcap).tanh_();
    if (slope != nullptr) *slope = at::square(s).neg_().add_(1.0);
    s.mul_(o.softcap);
  }
  if (mask.defined()) {
    const int64_t b = s.size(0), heads_k = s.size(1), keys = s.size(3);
    const int64_t rows = mask.size(-2), groups = s.size(2) / rows;
    s.view({b, heads_k, groups, rows, keys})
        .masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
  }
  return s;
}

struct ChunkedForward {
  Tensor out;  // [B, Tq, Hq, D] in v's dtype
  Tensor lse;  // [B, Hk, G, Tq] fp32: the log-sum-exp of each query row's masked scores
};

// For each chunk of query rows, with s its masked (capped) scores over the
// keys it can see (every row sees at least itself: its max is finite):
//   lse = log sum_j exp(s_j),  p = exp(s - lse),  out = p v
// q and k in fp32 for the scores; p cast to v's dtype before the product, as
// the reference does (HF eager), so out is in v's dtype.
ChunkedForward chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& documents, const ChunkedOptions& o) {
  const int64_t b = q.size(0), tq = q.size(1), heads_q = q.size(2), d = q.size(3);
  const int64_t tk = k.size(1), heads_k = k.size(2), groups = heads_q / heads_k;
  const Tensor k32 = heads_first_fp32(k);            // [B, Hk, Tk, D] fp32
  const Tensor vh = v.transpose(1, 2).contiguous();  // [B, Hk, Tk, D] in v's dtype
  ChunkedForward f;
  f.out = at::empty({b, tq, heads_q, d}, v.options());
  f.lse = at::empty({b, heads_k, groups, tq}, q.options().dtype(at::kFloat));
  for (int64_t row = 0; row < tq; row += o.chunk_rows) {
    const int64_t rows = std::min(o.chunk_rows, tq - row);
    const KeyRange keys = visible_keys(row, rows, tq, tk, o);
    const Tensor mask = visible_mask(row, rows, keys, tk - tq, o, documents, q.device());
    Tensor s = chunk_scores(grouped_rows(q, row, rows, heads_k),
                            k32.narrow(2, keys.begin, keys.size()), mask, o, nullptr);
    // p = exp(s - max) / sum exp(s - max) in place; lse = max + log(sum)
    const Tensor max = std::get<0>(s.max(-1, /*keepdim=*/true));  // [B, Hk, G * rows, 1]
    const Tensor sum = s.sub_(max).exp_().sum(-1, /*keepdim=*/true);
    const Tensor p = s.div_(sum);
    const Tensor lse = sum.log_().add_(max);
    // cast: probabilities to v's dtype before the product (fp32 stays fp32)
    const Tensor out = at::matmul(p.to(v.scalar_type()), vh.narrow(2, keys.begin, keys.size()));
    scatter_rows(out, f.out, row, rows, heads_k);
    f.lse.narrow(3, row, rows).copy_(lse.view({b, heads_k, groups, rows}));
  }
  return f;
}

struct ChunkedGrads {
  Tensor dq, dk, dv;  // in q's, k's and v's dtypes and shapes
};

// For each chunk, with do = dL/d out and p = exp(s - lse) recomputed from the
// scores and the saved lse (the probabilities are never stored):
//   dv += p^T do                          (summed over the chunk's rows)
//   dp  = do v^T
//   ds  = p * (dp - rowsum(do * out))     (softmax backward: rowsum(p * dp) = do . out)
//   ds *= 1 - tanh^2                      (through the softcap, when there is one)
//   dq  = ds k * scale,  dk += ds^T q * scale
// In fp32; dk and dv summed in fp32 [B, Hk, Tk, D] over the chunks and over
// the G query heads of each key/value head (the grouped rows' matmul sums
// them), then cast once.
ChunkedGrads chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Tensor& d_out, const Tensor& documents,
                              const ChunkedOptions& o) {
  const int64_t b = q.size(0), tq = q.size(1);
  const int64_t tk = k.size(1), heads_k = k.size(2), groups = q.size(2) / heads_k;
  const Tensor k32 = heads_first_fp32(k), v32 = heads_first_fp32(v);  // [B, Hk, Tk, D] fp32
  Tensor dk32 = at::zeros_like(k32), dv32 = at::zeros_like(v32);
  ChunkedGrads g;
  g.dq = at::empty(q.sizes(), q.options());  // every row written by its chunk
  for (int64_t row = 0; row < tq; row += o.chunk_rows) {
    const int64_t rows = std::min(o.chunk_rows, tq - row);
    const KeyRange keys = visible_keys(row, rows, tq, tk, o);
    const Tensor mask = visible_mask(row, rows, keys, tk - tq, o, documents, q.device());
    const Tensor q_rows = grouped_rows(q, row, rows, heads_k);  // [B, Hk, G * rows, D] fp32
    const Tensor do_rows = grouped_rows(d_out, row, rows, heads_k);
    const Tensor k_keys = k32.narrow(2, keys.begin, keys.size());
    const Tensor v_keys = v32.narrow(2, keys.begin, keys.size());
    Tensor slope;
    Tensor p = chunk_scores(q_rows, k_keys, mask, o, &slope);  // [B, Hk, G * rows, keys]
    p.view({b, heads_k, groups, rows, keys.size()})
        .sub_(lse.narrow(3, row, rows).unsqueeze(-1))
        .exp_();
    // rowsum(do * out) per query row: [B, Hk, G * rows, 1]
    const Tensor delta =
        (do_rows * grouped_rows(out, row, rows, heads_k)).sum(-1, /*keepdim=*/true);
    dv32.narrow(2, keys.begin, keys.size()).add_(at::matmul(p.transpose(-1, -2), do_rows));
    Tensor ds = at::matmul(do_rows, v_keys.transpose(-1, -2));  // dp
    ds.sub_(delta).mul_(p);
    p = Tensor();  // free the probabilities before the two products below
    if (slope.defined()) ds.mul_(slope);
    scatter_rows(at::matmul(ds, k_keys).mul_(o.scale), g.dq, row, rows, heads_k);
    dk32.narrow(2, keys.begin, keys.size())
        .add_(at::matmul(ds.transpose(-1, -2), q_rows).mul_(o.scale));
  }
  // cast: the fp32 sums to k's and v's dtypes, back to [B, Tk, Hk, D]
  g.dk = dk32.transpose(1, 2).to(k.scalar_type()).contiguous();
  g.dv = dv32.transpose(1, 2).to(v.scalar_type()).contiguous();
  return g;
}

// Saves q, k, v, out and the fp32 lse [B, Hq, Tq] (O(T) memory, as SDPA's
// flash path does), never the probabilities.
struct ChunkedAttentionFunction : public torch::autograd::Function<ChunkedAttentionFunction> {
  // documents is optional: an undefined Tensor cannot be an argument of apply.
  static Tensor forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const c10::optional<Tensor>& documents, bool causal, double scale,
                        int64_t window, double softcap, int64_t chunk_rows) {
    const ChunkedOptions o{causal, scale, window, softcap, chunk_rows};
    ChunkedForward f = chunked_forward(q, k, v, documents.value_or(Tensor()), o);
    ctx->save_for_backward({q, k, v, f.out, f.lse});
    if (documents.has_value()) ctx->saved_data["documents"] = *documents;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["window"] = window;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return f.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    ChunkedOptions o;
    o.causal = ctx->saved_data["causal"].toBool();
    o.scale = ctx->saved_data["scale"].toDouble();
    o.window = ctx->saved_data["window"].toInt();
    o.softcap = ctx->saved_data["softcap"].toDouble();
    o.chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const auto it = ctx->saved_data.find("documents");
    const Tensor documents = it != ctx->saved_data.end() ? it->second.toTensor() : Tensor();
    ChunkedGrads g = chunked_backward(saved[0], saved[1], saved[2], saved[3], saved[4],
                                      grad_outputs[0], documents, o);
    return {g.dq, g.dk, g.dv, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor attention_in_chunks(const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& options, int64_t chunk_rows) {
  checks::attention_args(q, k, v, options);
  TORCH_CHECK(chunk_rows > 0, "attention: chunk_rows must be positive, got ", chunk_rows);
  const double scale =
      options.scale > 0.0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const bool wants_grad =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (!wants_grad) {  // generation, evaluation: no lse to keep, no graph
    const ChunkedOptions o{options.causal, scale, options.sliding_window, options.softcap,
                           chunk_rows};
    return chunked_forward(q, k, v, options.document_ids, o).out;
  }
  return ChunkedAttentionFunction::apply(q, k, v, optional_tensor(options.document_ids),
                                         options.causal, scale, options.sliding_window,
                                         options.softcap, chunk_rows);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options) {
  checks::attention_args(q, k, v, options);
  if (reference::sdpa_serves(q, k, options)) return reference::attention(q, k, v, options);
  return attention_in_chunks(q, k, v, options,
                             kernels::attention_chunk_rows(q.size(0), q.size(2), q.size(1),
                                                           k.size(1), options.sliding_window));
}

}  // namespace liger::kernels::composite
