// The kernel registry: picks a backend per op from the toggles, the device and
// the compute dtype. Backends are providers (kernels/backend.h) tried in order
// of preference; this file names none of their kernels.
#include "kernels/registry.h"

#include "kernels/backend.h"

#include <c10/util/Exception.h>

#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string_view>
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

const BackendProvider* backend_provider(Backend backend) {
  switch (backend) {
    case Backend::reference: return &reference_backend();
    case Backend::composite: return &composite_backend();
    case Backend::cuda: return cuda_backend();
  }
  return nullptr;
}

namespace {

// The list's columns, one table each, indexed by Op (entry i of the list is Op i).
#define LIGER_OP_NAME(op, toggle, Kernel, doc) #op,
constexpr const char* kOpNames[] = {LIGER_KERNEL_OPS(LIGER_OP_NAME)};
#undef LIGER_OP_NAME
#define LIGER_OP_DOC(op, toggle, Kernel, doc) doc,
constexpr const char* kOpDocs[] = {LIGER_KERNEL_OPS(LIGER_OP_DOC)};
#undef LIGER_OP_DOC
// The toggle's name; "" for no_toggle.
#define LIGER_OP_TOGGLE(op, toggle, Kernel, doc) \
  (std::string_view(#toggle) == "no_toggle" ? "" : #toggle),
constexpr const char* kToggleNames[] = {LIGER_KERNEL_OPS(LIGER_OP_TOGGLE)};
#undef LIGER_OP_TOGGLE
static_assert(std::size(kOpNames) == kNumOps && std::size(kOpDocs) == kNumOps &&
                  std::size(kToggleNames) == kNumOps,
              "one name, doc and toggle per op of LIGER_KERNEL_OPS");

// The toggles under the names the list gives them: KernelToggles' members,
// and no_toggle for an op that has none (never on).
struct ListedToggles : KernelToggles {
  bool no_toggle = false;
};

}  // namespace

const char* op_name(Op op) {
  return kOpNames[static_cast<int>(op)];
}
const char* op_doc(Op op) {
  return kOpDocs[static_cast<int>(op)];
}

const char* toggle_name(Op op) {
  const char* name = kToggleNames[static_cast<int>(op)];
  return *name != '\0' ? name : nullptr;
}

KernelToggles KernelToggles::all_off() {
  ListedToggles t;
#define LIGER_TOGGLE_OFF(op, toggle, Kernel, doc) t.toggle = false;
  LIGER_KERNEL_OPS(LIGER_TOGGLE_OFF)
#undef LIGER_TOGGLE_OFF
  t.strict = false;
  return t;  // the KernelToggles part
}

std::string Selection::describe() const {
  std::ostringstream out;
  out << op_name(op) << ": " << backend_name(backend) << " (";
  if (fallback) out << "fallback, wanted cuda: ";
  out << reason << ")";
  return out.str();
}

namespace {

// The config key of an op's toggle: "kernels.rms_norm" (also for add_rms_norm).
std::string toggle_key(Op op) {
  return std::string("kernels.") + toggle_name(op);
}

// Whether the toggle that switches `op` is on.
bool toggle_on(const KernelToggles& toggles, Op op) {
  ListedToggles t;
  static_cast<KernelToggles&>(t) = toggles;
  switch (op) {
#define LIGER_TOGGLE_VALUE(op, toggle, Kernel, doc) \
  case Op::op: return t.toggle;
    LIGER_KERNEL_OPS(LIGER_TOGGLE_VALUE)
#undef LIGER_TOGGLE_VALUE
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
  // An op without a toggle is the same on every backend: the reference, and
  // the list's doc says why.
  if (toggle_name(op) == nullptr) return {{op, Backend::reference, op_doc(op), false}, reference};
  // "toggle", or "toggle kernels.rms_norm" for an op switched by another op's toggle.
  const std::string toggle = std::string_view(toggle_name(op)) == op_name(op)
                                 ? std::string("toggle")
                                 : "toggle " + toggle_key(op);
  if (!toggle_on(toggles, op)) return {{op, Backend::reference, toggle + " off", false}, reference};

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

KernelSet resolve_kernels(const KernelToggles& toggles, c10::Device device, c10::ScalarType dtype) {
  if (toggles.cross_entropy && toggles.fused_linear_cross_entropy) {
    throw std::invalid_argument(
        "kernels.cross_entropy and kernels.fused_linear_cross_entropy are both true, but the loss "
        "uses one of them: set kernels.cross_entropy: false (fused linear cross entropy, which "
        "never materialises the logits) or kernels.fused_linear_cross_entropy: false");
  }
  if (!c10::isFloatingType(dtype)) {
    throw std::invalid_argument(
        c10::str("kernels: the compute dtype must be floating point "
                 "(float32, bfloat16 or float16), got ",
                 dtype));
  }

  KernelSet set;
  set.use_flce_ = toggles.fused_linear_cross_entropy;
  set.fuse_qk_norm_ = toggles.rope && toggles.rms_norm;  // see KernelSet::fuses_qk_norm
  for (Op op : kAllOps) {
    Choice choice = choose(toggles, op, device, dtype);
    Selection& selection = choice.selection;
    if (selection.fallback && toggles.strict) {
      throw std::runtime_error(c10::str("kernels.strict: ", op_name(op), " wanted cuda but ",
                                        selection.reason, " (it would fall back to ",
                                        backend_name(selection.backend),
                                        "); set kernels.strict: "
                                        "false to allow the fallback, or ",
                                        toggle_key(op), ": false to use the reference"));
    }

    if (op == Op::rope_qkv_norm && toggles.rope && !toggles.rms_norm) {
      selection.reason += "; not taken: kernels.rms_norm off (rms_norm, then rope)";
    }
    const Backend backend = selection.backend;
    set.kernels_.take(op, choice.provider->ops);
    set.backends_[static_cast<int>(op)] = backend;
    set.selections_.push_back(std::move(selection));
  }
  set.tuned_head_gemm_ = set.backend(Op::tuned_gemm) == Backend::cuda;
  set.plain_attention_ = toggles.plain_attention;
  return set;
}

KernelSet KernelSet::reference() {
  KernelSet set = resolve_kernels(KernelToggles::all_off(), c10::Device(c10::kCPU), c10::kFloat);
  for (Selection& s : set.selections_) {
    if (toggle_name(s.op) != nullptr) s.reason = "reference set";  // else the op's doc
  }
  return set;
}

std::vector<std::string> take_kernel_notes() {
  const BackendProvider* cuda = cuda_backend();
  return cuda != nullptr && cuda->take_notes != nullptr ? cuda->take_notes()
                                                        : std::vector<std::string>();
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
