// A GLU MLP with its residual add, y = residual + glu(x Wg^T, x Wu^T) Wd^T, as
// one autograd node that keeps x, gate = x Wg^T and up = x Wu^T for backward
// but not the product h = glu(gate, up): [tokens, intermediate], the largest
// activation of a decoder layer (Llama-3.2-1B at 8192 tokens: 128 MiB per
// layer). Backward
//   dh = dy Wd,   (h, dgate, dup) = the GLU op's recomputing backward of dh,
//   dWd = dy^T h,  dWg = dgate^T x,  dWu = dup^T x,
//   dx = dgate Wg + dup Wu     (the second GEMM accumulates into the first's output),
//   dresidual = dy
// where the middle step recomputes h and takes the GLU gradients in one pass
// (the cuda kernel reads gate, up and dh once; kernels/ops.h GluRecomputeFn),
// writing dgate and dup over gate's and up's buffers (the node's own). The
// forward adds the residual inside the down projection's GEMM (beta = 1), so
// neither the residual add nor the sum of the two input gradients is a pass
// of its own. Values and gradients equal those of two linears, glu(), a
// linear and an add up to rounding (in bf16 the add and the gradient sum are
// rounded once, inside the GEMMs, instead of twice).
//
// LoRA adapters (models/lora_operands.h) on gate|up and on down join the same
// node: u = scaling * dropout(x) cat(A_g, A_u)^T is one GEMM, each delta is
// written first and the base GEMM adds into it; backward takes
// g = scaling * [dgate B_g | dup B_u], dA = g^T dropout(x) in one GEMM and
// adds g cat(A) into dx before the two base GEMMs accumulate into it. The
// down adapter's input is h, which backward recomputes anyway. Frozen
// weights (LoRA's base) cost no weight-gradient GEMM.
#pragma once

#include "kernels/registry.h"
#include "models/lora_operands.h"

#include <ATen/core/Tensor.h>

namespace liger::models {

enum class GluKind { swiglu, geglu };

// kernels: the set the model calls (it must outlive the autograd graph).
// x: [..., hidden]; gate_weight, up_weight: [intermediate, hidden];
// down_weight: [hidden, intermediate]; residual: x's shape, or undefined (no add).
// gate_up_lora: adapters of {gate, up} (a[0]/b[0] gate, a[1]/b[1] up, either
// undefined; mask on x); down_lora: of {down} (mask on h); nullptr = none.
at::Tensor glu_mlp_recomputed(const kernels::KernelSet& kernels, GluKind kind, const at::Tensor& x,
                              const at::Tensor& gate_weight, const at::Tensor& up_weight,
                              const at::Tensor& down_weight, const at::Tensor& residual,
                              const LoraOperands* gate_up_lora = nullptr,
                              const LoraOperands* down_lora = nullptr);

}  // namespace liger::models
