// OpTable's per-op access, generated from kernels/op_list.h.
#include "kernels/op_table.h"

namespace liger::kernels {

bool OpTable::has(Op op) const {
  bool has_all = false;
  switch (op) {
#define LIGER_HAS_KERNEL(name, toggle, Kernel, doc) \
  case Op::name: has_all = name != nullptr; break;
    LIGER_KERNEL_OPS(LIGER_HAS_KERNEL)
#undef LIGER_HAS_KERNEL
  }
#define LIGER_HAS_COMPANION(kernel, of, Kernel) \
  if (op == Op::of) has_all = has_all && kernel != nullptr;
  LIGER_KERNEL_COMPANIONS(LIGER_HAS_COMPANION)
#undef LIGER_HAS_COMPANION
  return has_all;
}

void OpTable::take(Op op, const OpTable& from) {
  switch (op) {
#define LIGER_TAKE_KERNEL(name, toggle, Kernel, doc) \
  case Op::name: name = from.name; break;
    LIGER_KERNEL_OPS(LIGER_TAKE_KERNEL)
#undef LIGER_TAKE_KERNEL
  }
#define LIGER_TAKE_COMPANION(kernel, of, Kernel) \
  if (op == Op::of) kernel = from.kernel;
  LIGER_KERNEL_COMPANIONS(LIGER_TAKE_COMPANION)
#undef LIGER_TAKE_COMPANION
}

}  // namespace liger::kernels
