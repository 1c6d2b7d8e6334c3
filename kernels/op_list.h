// The kernel ops, listed once. The Op enum, the op names, the toggle each op
// follows, every backend's table of kernels (kernels/op_table.h), what a
// KernelSet holds and the registry's walk over the ops are generated from
// this list; tests/kernels/test_op_list.cpp must have a sample case for each
// entry (case_<op>(), or it does not compile) and checks every backend that
// serves the op against the reference with it.
//
// X(op, toggle, Kernel, doc):
//   op      the op's name: Op::op, op_name(), the OpTable member, the start-up table
//   toggle  the kernels: key (a KernelToggles member) that switches the op:
//           its own name, another op's (add_rms_norm follows rms_norm), or
//           no_toggle: the reference serves it everywhere, `doc` saying why
//   Kernel  the function pointer type of its kernels (kernels/ops.h)
//   doc     one line: what it computes
//
// Adding an op: its Kernel type in ops.h, a line here (and in
// LIGER_KERNEL_COMPANIONS below if it needs a second kernel), a call in
// KernelSet (registry.h), its kernels in the backends that have them
// (<backend>/backend.cpp), case_<op>() in tests/kernels/test_op_list.cpp and,
// for a new toggle, a KernelToggles member.
#pragma once

#include <array>

#define LIGER_KERNEL_OPS(X)                                                                        \
  X(rms_norm, rms_norm, RmsNormFn, "x / sqrt(mean(x^2) + eps) * (offset + w) over the last dim")   \
  X(add_rms_norm, rms_norm, AddRmsNormFn, "s = x + residual, then {rms_norm(s), s}")               \
  X(layer_norm, layer_norm, LayerNormFn, "(x - mean) / sqrt(var + eps) * w + b over the last dim") \
  X(rope, rope, RopeFn, "rotary position embedding of q and k (HF rotate_half)")                   \
  X(rope_qkv, rope, RopeQkvFn, "rope of a packed q|k|v projection: {rope(q), rope(k), v}")         \
  X(swiglu, swiglu, GluFn, "silu(gate) * up")                                                      \
  X(geglu, geglu, GluFn, "gelu_tanh(gate) * up")                                                   \
  X(cross_entropy, cross_entropy, CrossEntropyFn, "cross entropy of logits [N, V]")                \
  X(fused_linear_cross_entropy, fused_linear_cross_entropy, FusedLinearCrossEntropyFn,             \
    "cross_entropy(hidden @ weight^T + bias) without the whole logits")                            \
  X(attention, attention, AttentionFn,                                                             \
    "softmax(softcap(q k^T * scale) + mask) v; fused: SDPA when plain, else exact query chunks")   \
  X(tuned_gemm, tuned_gemm, TunedGemmFn, "a @ b (+ c) of the linear layers, no autograd")

// Kernels served with an op, by the backend that serves the op (a backend
// serves the op only when it has all of them):
// Y(kernel, op, Kernel) - the OpTable member, the op, its function pointer type.
#define LIGER_KERNEL_COMPANIONS(Y)            \
  Y(swiglu_recompute, swiglu, GluRecomputeFn) \
  Y(geglu_recompute, geglu, GluRecomputeFn)

namespace liger::kernels {

#define LIGER_OP_ENUMERATOR(op, toggle, Kernel, doc) op,
enum class Op { LIGER_KERNEL_OPS(LIGER_OP_ENUMERATOR) };
#undef LIGER_OP_ENUMERATOR

// One per entry of the list.
#define LIGER_OP_COUNT(op, toggle, Kernel, doc) +1
constexpr int kNumOps = 0 LIGER_KERNEL_OPS(LIGER_OP_COUNT);
#undef LIGER_OP_COUNT

// Every op, in the list's order (the order of the start-up table).
#define LIGER_OP_ENTRY(op, toggle, Kernel, doc) Op::op,
constexpr std::array<Op, kNumOps> kAllOps = {LIGER_KERNEL_OPS(LIGER_OP_ENTRY)};
#undef LIGER_OP_ENTRY

// Op i is entry i of the list: tables indexed by static_cast<int>(op) line up.
constexpr bool ops_are_numbered_in_list_order() {
  for (int i = 0; i < kNumOps; ++i) {
    if (static_cast<int>(kAllOps[i]) != i) return false;
  }
  return true;
}
static_assert(ops_are_numbered_in_list_order(), "Op's enumerators must follow LIGER_KERNEL_OPS");

// "rms_norm", as in the list.
const char* op_name(Op op);
// The list's one-line description.
const char* op_doc(Op op);
// The kernels: key that switches `op` ("rms_norm" for add_rms_norm), or
// nullptr for an op without one.
const char* toggle_name(Op op);

}  // namespace liger::kernels
