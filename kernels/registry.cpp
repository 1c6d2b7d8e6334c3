// The kernel registry: picks a backend per op from the toggles, the device and
// the compute dtype. Backends are providers (kernels/backend.h) tried in order
// of preference; this file names none of their kernels.
#include "kernels/registry.h"

#include "kernels/backend.h"

#include <c10/util/Exception.h>

#include <sstream>
#include <stdexcept>
#include <vector>

namespace liger::kernels {

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::reference: return "reference";
    case Backend::composite: return "composite";
    case Backend::cuda: return "cuda";
  }
  return "unknown";
}

const char* op_name(Op op) {
  switch (op) {
    case Op::rms_norm: return "rms_norm";
    case Op::add_rms_norm: return "add_rms_norm";
    case Op::layer_norm: return "layer_norm";
    case Op::rope: return "rope";
    case Op::rope_qkv: return "rope_qkv";
    case Op::swiglu: return "swiglu";
    case Op::geglu: return "geglu";
    case Op::cross_entropy: return "cross_entropy";
    case Op::fused_linear_cross_entropy: return "fused_linear_cross_entropy";
    case Op::attention: return "attention";
    case Op::tuned_gemm: return "tuned_gemm";
  }
  return "unknown";
}

bool OpTable::has(Op op) const {
  switch (op) {
    case Op::rms_norm: return rms_norm != nullptr;
    case Op::add_rms_norm: return add_rms_norm != nullptr;
    case Op::layer_norm: return layer_norm != nullptr;
    case Op::rope: return rope != nullptr;
    case Op::rope_qkv: return rope_qkv != nullptr;
    case Op::swiglu: return swiglu != nullptr && swiglu_recompute != nullptr;
    case Op::geglu: return geglu != nullptr && geglu_recompute != nullptr;
    case Op::cross_entropy: return cross_entropy != nullptr;
    case Op::fused_linear_cross_entropy: return fused_linear_cross_entropy != nullptr;
    case Op::attention: return attention != nullptr;
    case Op::tuned_gemm: return tuned_gemm != nullptr;
  }
  return false;
}

KernelToggles KernelToggles::all_off() {
  KernelToggles t;
  t.rms_norm = t.layer_norm = t.rope = t.swiglu = t.geglu = false;
  t.cross_entropy = t.fused_linear_cross_entropy = t.tuned_gemm = false;
  t.strict = false;
  return t;
}

std::string Selection::describe() const {
  std::ostringstream out;
  out << op_name(op) << ": " << backend_name(backend) << " (";
  if (fallback) out << "fallback, wanted cuda: ";
  out << reason << ")";
  return out.str();
}

namespace {

constexpr Op kAllOps[kNumOps] = {
    Op::rms_norm, Op::add_rms_norm, Op::layer_norm,
    Op::rope, Op::rope_qkv, Op::swiglu, Op::geglu,
    Op::cross_entropy, Op::fused_linear_cross_entropy, Op::attention, Op::tuned_gemm,
};

// The op whose toggle switches `op`: the residual add + RMSNorm and the
// packed-projection RoPE have no keys of their own and follow kernels.rms_norm
// and kernels.rope.
Op toggle_op(Op op) {
  switch (op) {
    case Op::add_rms_norm: return Op::rms_norm;
    case Op::rope_qkv: return Op::rope;
    default: return op;
  }
}

// The config key of an op's toggle.
std::string toggle_key(Op op) { return std::string("kernels.") + op_name(toggle_op(op)); }

bool toggle_of(const KernelToggles& t, Op op) {
  switch (op) {
    case Op::rms_norm: return t.rms_norm;
    case Op::add_rms_norm: return toggle_of(t, toggle_op(op));
    case Op::layer_norm: return t.layer_norm;
    case Op::rope: return t.rope;
    case Op::rope_qkv: return toggle_of(t, toggle_op(op));
    case Op::swiglu: return t.swiglu;
    case Op::geglu: return t.geglu;
    case Op::cross_entropy: return t.cross_entropy;
    case Op::fused_linear_cross_entropy: return t.fused_linear_cross_entropy;
    case Op::attention: return false;  // no toggle: always SDPA
    case Op::tuned_gemm: return t.tuned_gemm;
  }
  return false;
}

// A candidate backend for one op: its provider (nullptr when not built) and
// the name it goes by in messages.
struct Candidate {
  Backend backend;
  const BackendProvider* provider;
};

// Why `c` cannot serve `op` here, or "" when it can.
std::string why_not(const Candidate& c, Op op, c10::Device device, c10::ScalarType dtype) {
  if (c.provider == nullptr) {
    return c.backend == Backend::cuda ? "built without CUDA"
                                      : std::string("built without ") + backend_name(c.backend);
  }
  if (!c.provider->ops.has(op)) {
    return std::string("no ") + backend_name(c.backend) + " kernel for this op yet";
  }
  return c.provider->unavailable(op, device, dtype);
}

// Backends a toggle that is on asks for, best first; the last one always serves.
std::vector<Candidate> fused_candidates(c10::Device device) {
  std::vector<Candidate> out;
  if (device.is_cuda()) out.push_back({Backend::cuda, cuda_backend()});
  out.push_back({Backend::composite, &composite_backend()});
  out.push_back({Backend::reference, &reference_backend()});
  return out;
}

// The selection for one op and the provider that serves it.
struct Choice {
  Selection selection;
  const BackendProvider* provider;
};

Choice choose(const KernelToggles& toggles, Op op, c10::Device device, c10::ScalarType dtype) {
  const BackendProvider* reference = &reference_backend();
  if (op == Op::attention) {
    return {{op, Backend::reference, "sdpa: at::scaled_dot_product_attention on every backend",
             false},
            reference};
  }
  // "toggle", or "toggle kernels.rms_norm" for an op switched by another op's toggle.
  const std::string toggle =
      toggle_op(op) == op ? std::string("toggle") : "toggle " + toggle_key(op);
  if (!toggle_of(toggles, op)) return {{op, Backend::reference, toggle + " off", false}, reference};

  const std::vector<Candidate> candidates = fused_candidates(device);
  std::string first_reason;  // why the preferred backend does not serve
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string reason = why_not(candidates[i], op, device, dtype);
    if (i == 0) first_reason = reason;
    if (!reason.empty()) continue;
    if (i > 0) return {{op, candidates[i].backend, first_reason, true}, candidates[i].provider};
    // The preferred backend serves: say why nothing better was asked for.
    std::string why = "fused " + toggle + " on";
    if (candidates[i].backend != Backend::cuda) {
      why += cuda_backend() == nullptr ? "; no cuda build"
                                       : std::string("; device is ") + device.str();
    }
    return {{op, candidates[i].backend, why, false}, candidates[i].provider};
  }
  return {{op, Backend::reference, first_reason, true}, reference};  // unreachable
}

}  // namespace

KernelSet resolve_kernels(const KernelToggles& toggles, c10::Device device,
                          c10::ScalarType dtype) {
  if (toggles.cross_entropy && toggles.fused_linear_cross_entropy) {
    throw std::invalid_argument(
        "kernels.cross_entropy and kernels.fused_linear_cross_entropy are both true, but the loss "
        "uses one of them: set kernels.cross_entropy: false (fused linear cross entropy, which "
        "never materialises the logits) or kernels.fused_linear_cross_entropy: false");
  }
  if (!c10::isFloatingType(dtype)) {
    throw std::invalid_argument(c10::str("kernels: the compute dtype must be floating point "
                                         "(float32, bfloat16 or float16), got ",
                                         dtype));
  }

  KernelSet set;
  set.use_flce_ = toggles.fused_linear_cross_entropy;
  for (Op op : kAllOps) {
    Choice choice = choose(toggles, op, device, dtype);
    Selection& selection = choice.selection;
    if (selection.fallback && toggles.strict) {
      throw std::runtime_error(c10::str(
          "kernels.strict: ", op_name(op), " wanted cuda but ", selection.reason,
          " (it would fall back to ", backend_name(selection.backend), "); set kernels.strict: "
          "false to allow the fallback, or ", toggle_key(op), ": false to use the reference"));
    }

    const Backend backend = selection.backend;
    const OpTable& ops = choice.provider->ops;
    switch (op) {
      case Op::rms_norm: set.rms_norm_ = ops.rms_norm; break;
      case Op::add_rms_norm: set.add_rms_norm_ = ops.add_rms_norm; break;
      case Op::layer_norm: set.layer_norm_ = ops.layer_norm; break;
      case Op::rope: set.rope_ = ops.rope; break;
      case Op::rope_qkv: set.rope_qkv_ = ops.rope_qkv; break;
      case Op::swiglu:
        set.swiglu_ = ops.swiglu;
        set.swiglu_recompute_ = ops.swiglu_recompute;
        break;
      case Op::geglu:
        set.geglu_ = ops.geglu;
        set.geglu_recompute_ = ops.geglu_recompute;
        break;
      case Op::cross_entropy: set.cross_entropy_ = ops.cross_entropy; break;
      case Op::fused_linear_cross_entropy:
        set.fused_linear_cross_entropy_ = ops.fused_linear_cross_entropy;
        break;
      case Op::attention: set.attention_ = ops.attention; break;
      case Op::tuned_gemm: set.tuned_gemm_ = ops.tuned_gemm; break;
    }
    set.backends_[static_cast<int>(op)] = backend;
    set.selections_.push_back(std::move(selection));
  }
  set.tuned_head_gemm_ = set.backend(Op::tuned_gemm) == Backend::cuda;
  return set;
}

KernelSet KernelSet::reference() {
  KernelSet set =
      resolve_kernels(KernelToggles::all_off(), c10::Device(c10::kCPU), c10::kFloat);
  for (Selection& s : set.selections_) {
    if (s.op != Op::attention) s.reason = "reference set";
  }
  return set;
}

std::vector<std::string> take_kernel_notes() {
  const BackendProvider* cuda = cuda_backend();
  return cuda != nullptr && cuda->take_notes != nullptr ? cuda->take_notes() : std::vector<std::string>();
}

std::string format_selection_table(const KernelSet& kernels) {
  std::string out;
  for (const Selection& s : kernels.selections()) {
    if (!out.empty()) out += '\n';
    out += s.describe();
  }
  return out;
}

}  // namespace liger::kernels
