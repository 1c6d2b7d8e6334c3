// One kernel per op (kernels/op_list.h): what a backend has, and what a
// KernelSet was given by the registry. The members are the list's ops and
// their companions by name (ops.rms_norm, ops.swiglu_recompute); nullptr
// where the backend has no kernel.
#pragma once

#include "kernels/op_list.h"
#include "kernels/ops.h"

namespace liger::kernels {

struct OpTable {
#define LIGER_OP_TABLE_MEMBER(op, toggle, Kernel, doc) Kernel op = nullptr;
  LIGER_KERNEL_OPS(LIGER_OP_TABLE_MEMBER)
#undef LIGER_OP_TABLE_MEMBER
#define LIGER_OP_TABLE_COMPANION(kernel, op, Kernel) Kernel kernel = nullptr;
  LIGER_KERNEL_COMPANIONS(LIGER_OP_TABLE_COMPANION)
#undef LIGER_OP_TABLE_COMPANION

  // Whether this table has the kernel of `op` and of each of its companions.
  bool has(Op op) const;
  // Copies the kernel of `op` and its companions from `from`.
  void take(Op op, const OpTable& from);
};

}  // namespace liger::kernels
