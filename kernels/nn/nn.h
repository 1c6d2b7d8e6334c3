// The LibTorch-facing API of the kernels library in one include: the
// torch::nn-style modules (RMSNorm, LayerNorm, SwiGLUMLP, GeGLUMLP,
// CrossEntropyLoss, FusedLinearCrossEntropyLoss), rope, and the functional
// ops (liger::nn::functional). docs/library.md shows how to use them.
#pragma once

#include "kernels/nn/functional.h"
#include "kernels/nn/glu_mlp.h"
#include "kernels/nn/layer_norm.h"
#include "kernels/nn/losses.h"
#include "kernels/nn/rms_norm.h"
#include "kernels/nn/rope.h"
