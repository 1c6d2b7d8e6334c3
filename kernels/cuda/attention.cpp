// The cuda backend's attention. Plain causal or non-causal attention (what
// ATen's SDPA masks itself) stays on SDPA, which picks cuDNN or flash
// attention, unless AttentionOptions::plain sends it to this kernel (where
// measured faster: launch::attention_faster_than_sdpa); every other variant this kernel takes (a
// sliding window, a softcap, document ids, a causal query block at the end of a KV cache) runs
// kernels/cuda/attention.cu: O(T) memory, key tiles a mask empties skipped.
// Shapes the kernel does not take (fp32, head_dim other than 64, 128, 256)
// go to the composite's exact query chunks.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

launch::AttentionShape shape_of(const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& documents, int64_t document_tokens, bool causal,
                                double scale, int64_t window, double softcap) {
  launch::AttentionShape a;
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.document_ids = documents.defined() ? documents.data_ptr<int64_t>() : nullptr;
  a.document_tokens = document_tokens;
  a.batch = q.size(0);
  a.tq = q.size(1);
  a.heads_q = q.size(2);
  a.head_dim = q.size(3);
  a.tk = k.size(1);
  a.heads_k = k.size(2);
  a.causal = causal;
  a.window = window;
  a.scale = static_cast<float>(scale);
  a.softcap = static_cast<float>(softcap);
  a.dtype = dtype_of("attention", q);
  return a;
}

// The document ranges' workspace (int64), or undefined without documents.
Tensor document_ranges(const Tensor& documents, const Tensor& q) {
  if (!documents.defined()) return Tensor();
  return at::empty({launch::attention_document_ranges_elems(documents.size(0), documents.size(1))},
                   q.options().dtype(at::kLong));
}

// Saves q, k, v, out and the fp32 lse [B, Hq, Tq]; backward recomputes the
// probabilities tile by tile.
struct FlashAttentionFunction : public torch::autograd::Function<FlashAttentionFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in,
                        const Tensor& v_in, const c10::optional<Tensor>& documents_in,
                        int64_t document_tokens, bool causal, double scale, int64_t window,
                        double softcap) {
    const Tensor q = dense(q_in), k = dense(k_in), v = dense(v_in);
    const Tensor documents =
        documents_in.has_value() ? documents_in->to(q.device(), at::kLong).contiguous() : Tensor();
    const c10::cuda::CUDAGuard guard(q.device());
    Tensor out = at::empty(q.sizes(), q.options());
    Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
    const Tensor ranges = document_ranges(documents, q);
    launch::AttentionShape a =
        shape_of(q, k, v, documents, document_tokens, causal, scale, window, softcap);
    a.out = out.data_ptr();
    a.lse = lse.data_ptr<float>();
    a.document_ranges = ranges.defined() ? ranges.data_ptr<int64_t>() : nullptr;
    check_launch("attention", launch::attention_forward(a, current_stream()));
    ctx->save_for_backward({q, k, v, out, lse});
    if (documents.defined()) ctx->saved_data["documents"] = documents;
    ctx->saved_data["document_tokens"] = document_tokens;  // the backward takes the same kernels
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["window"] = window;
    ctx->saved_data["softcap"] = softcap;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const auto it = ctx->saved_data.find("documents");
    const Tensor documents = it != ctx->saved_data.end() ? it->second.toTensor() : Tensor();
    const c10::cuda::CUDAGuard guard(q.device());
    // cast: the incoming gradient to q's dtype (the kernels read one dtype)
    const Tensor d_out = dense(grad_outputs[0].to(q.scalar_type()));
    Tensor dq = at::empty(q.sizes(), q.options());
    Tensor dk = at::empty(k.sizes(), k.options());
    Tensor dv = at::empty(v.sizes(), v.options());
    Tensor delta = at::empty(lse.sizes(), lse.options());
    const Tensor ranges = document_ranges(documents, q);
    launch::AttentionShape a =
        shape_of(q, k, v, documents, ctx->saved_data["document_tokens"].toInt(),
                 ctx->saved_data["causal"].toBool(), ctx->saved_data["scale"].toDouble(),
                 ctx->saved_data["window"].toInt(), ctx->saved_data["softcap"].toDouble());
    a.out = out.data_ptr();
    a.lse = lse.data_ptr<float>();
    a.document_ranges = ranges.defined() ? ranges.data_ptr<int64_t>() : nullptr;
    // the fused dq's fp32 sums, where the backward takes that path
    const int64_t workspace = launch::attention_backward_workspace_elems(a);
    const Tensor dq_accum = workspace > 0 ? at::empty({workspace}, lse.options()) : Tensor();
    launch::AttentionGrads g;
    g.d_out = d_out.data_ptr();
    g.delta = delta.data_ptr<float>();
    g.dq_accum = workspace > 0 ? dq_accum.data_ptr<float>() : nullptr;
    g.dq = dq.data_ptr();
    g.dk = dk.data_ptr();
    g.dv = dv.data_ptr();
    check_launch("attention", launch::attention_backward(a, g, current_stream()));
    return {dq, dk, dv, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Which implementation served each variant, said once per variant (the
// trainer logs the notes after the first step): the start-up table names the
// backend, these name the path inside it.
// A variant as plain values: what decides the path and the note's words.
using VariantKey = std::tuple<const char*, bool, int64_t, double, bool, bool, int64_t, int>;

struct ServedNotes {
  std::mutex mutex;
  std::set<VariantKey> said;
  std::vector<std::string> pending;
};
ServedNotes& served_notes() {
  static ServedNotes notes;
  return notes;
}

// Called on every attention call: the key is built from plain values and the
// note's text only for a variant not seen before.
void note_served(const char* path, const Tensor& q, const Tensor& k,
                 const AttentionOptions& options) {
  const bool kv_cache = q.size(1) != k.size(1);
  const VariantKey key{path,
                       options.causal,
                       options.sliding_window,
                       options.softcap,
                       options.document_ids.defined(),
                       kv_cache,
                       q.size(3),
                       static_cast<int>(q.scalar_type())};
  ServedNotes& notes = served_notes();
  const std::lock_guard<std::mutex> lock(notes.mutex);
  if (!notes.said.insert(key).second) return;
  std::string variant = options.causal ? "causal" : "not causal";
  if (options.sliding_window > 0) variant += ", window " + std::to_string(options.sliding_window);
  if (options.softcap > 0.0) variant += ", softcap " + std::to_string(options.softcap);
  if (options.document_ids.defined()) variant += ", documents";
  if (kv_cache) variant += ", KV cache";
  variant += ", head_dim " + std::to_string(q.size(3)) + ", " + c10::toString(q.scalar_type());
  notes.pending.push_back(std::string("attention (") + variant + "): " + path);
}

}  // namespace

std::vector<std::string> take_attention_notes() {
  ServedNotes& notes = served_notes();
  const std::lock_guard<std::mutex> lock(notes.mutex);
  std::vector<std::string> out;
  out.swap(notes.pending);
  return out;
}

bool flash_attention_serves(const Tensor& q, const Tensor& k, const Tensor& v) {
  if (!q.is_cuda() || !is_kernel_dtype(q)) return false;
  if (k.scalar_type() != q.scalar_type() || v.scalar_type() != q.scalar_type()) return false;
  if (k.device() != q.device() || v.device() != q.device()) return false;
  if (k.size(3) != q.size(3) || v.size(3) != q.size(3)) return false;
  // Positions and per-row offsets are 32-bit inside the kernel.
  if (q.size(1) >= (int64_t{1} << 30) || k.size(1) >= (int64_t{1} << 30)) return false;
  return launch::attention_supported(q.size(3), dtype_of("attention", q));
}

Tensor attention_document_bounds(const Tensor& document_ids) {
  TORCH_CHECK(document_ids.is_cuda() && document_ids.dim() == 2,
              "attention_document_bounds: document ids must be a [B, T] CUDA tensor, got ",
              document_ids.sizes(), " on ", document_ids.device());
  const Tensor ids = document_ids.to(at::kLong).contiguous();
  const c10::cuda::CUDAGuard guard(ids.device());
  const int64_t batch = ids.size(0), t = ids.size(1);
  const Tensor workspace = document_ranges(ids, ids);
  check_launch("attention_document_bounds",
               launch::attention_document_bounds(ids.data_ptr<int64_t>(), batch, t,
                                                 workspace.data_ptr<int64_t>(), current_stream()));
  // the workspace: [B, S, 2] ranges, then [B, S, 2] bounds
  return workspace.narrow(0, workspace.numel() / 2, workspace.numel() / 2).view({batch, -1, 2});
}

int set_attention_row_tiles(int tiles) {
  const int previous = launch::set_attention_row_tiles(tiles);
  TORCH_CHECK(previous >= 0, "attention (cuda): row tiles must be 0 (automatic), 1 or 2, got ",
              tiles);
  return previous;
}

bool set_attention_forward_wgmma(bool on) {
  return launch::set_attention_forward_wgmma(on);
}

bool set_attention_backward_wgmma(bool on) {
  return launch::set_attention_backward_wgmma(on);
}

bool set_attention_tma(bool on) {
  return launch::set_attention_tma(on);
}

int64_t attention_tma_launches() {
  return launch::attention_tma_launches();
}

int set_attention_warp_specialized(int mode) {
  TORCH_CHECK(mode >= 0 && mode <= 2,
              "set_attention_warp_specialized: 0 (off), 1 (on) or 2 (measured), not ", mode);
  return static_cast<int>(
      launch::set_attention_warp_specialized(static_cast<launch::WarpSpecialized>(mode)));
}

int64_t attention_warp_specialized_launches() {
  return launch::attention_warp_specialized_launches();
}

int64_t attention_forward_launches() {
  return launch::attention_forward_launches();
}

bool set_attention_fused_dq(bool on) {
  return launch::set_attention_fused_dq(on);
}

int set_attention_fused_dq_query_rows(int rows) {
  TORCH_CHECK(rows == 0 || rows == 64 || rows == 128,
              "set_attention_fused_dq_query_rows: 0 (measured), 64 or 128, not ", rows);
  return launch::set_attention_fused_dq_query_rows(rows);
}

int set_attention_wgmma_schedule(int schedule) {
  TORCH_CHECK(schedule >= 0 && schedule <= 3,
              "set_attention_wgmma_schedule: 0 (measured), 1 (one at a time), 2 (overlapped) or 3 "
              "(ping-pong), not ",
              schedule);
  return static_cast<int>(
      launch::set_attention_wgmma_schedule(static_cast<launch::AttentionSchedule>(schedule)));
}

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& options) {
  checks::attention_args(q, k, v, options);
  TORCH_CHECK(flash_attention_serves(q, k, v),
              "attention (cuda): the kernel takes bf16/fp16 CUDA tensors of head_dim 64, 128 or "
              "256, got ",
              q.scalar_type(), " head_dim ", q.size(3), " on ", q.device());
  const double scale =
      options.scale > 0.0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  return FlashAttentionFunction::apply(q, k, v, optional_tensor(options.document_ids),
                                       options.document_tokens, options.causal, scale,
                                       options.sliding_window, options.softcap);
}

namespace {
// Where SDPA can mask the variant: whether our kernel serves it instead
// (AttentionOptions::plain; measured: where launch::attention_faster_than_sdpa).
bool ours_for_plain(const Tensor& q, const Tensor& k, const Tensor& v,
                    const AttentionOptions& options) {
  if (options.plain == PlainAttention::sdpa || !flash_attention_serves(q, k, v)) return false;
  if (options.plain == PlainAttention::liger) return true;
  const c10::cuda::CUDAGuard guard(q.device());  // the device the rule asks about
  return launch::attention_faster_than_sdpa(q.size(3), q.size(1), k.size(1), options.causal,
                                            k.size(2), q.size(0));
}
}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options) {
  checks::attention_args(q, k, v, options);
  if (reference::sdpa_serves(q, k, options) && !ours_for_plain(q, k, v, options)) {
    note_served("ATen SDPA (cuDNN / flash)", q, k, options);
    return reference::attention(q, k, v, options);
  }
  if (flash_attention_serves(q, k, v)) {
    note_served("our flash kernel (kernels/cuda/attention.cu)", q, k, options);
    return flash_attention(q, k, v, options);
  }
  note_served("composite query chunks (the kernel takes bf16/fp16, head_dim 64/128/256)", q, k,
              options);
  return composite::attention(q, k, v, options);
}

}  // namespace liger::kernels::cuda
