// A tied embedding's two uses, the lookup (first in the forward) and the
// lm_head (last), joined in backward: the head's [vocab, hidden] gradient
// is held back when it arrives, and the lookup's backward adds the rows of
// the ids into it (kernels::add_embedding_grad) and returns the sum as the
// weight's one gradient. Plain autograd would instead build a second dense
// [vocab, hidden] gradient for the lookup (a zero fill and a scatter) and
// add the two: two more passes over the largest tensor of a small model and
// one more of it alive. Same values up to rounding: the sum of a row's
// lookup gradients is taken in fp32 and rounded once into the head's
// gradient.
//
// Use: one TiedEmbeddingLink per forward; tied_lookup() for the embedding,
// tied_head() on the weight the loss (or the logits) reads. Either backward
// may run first: when the lookup's runs first (the head's gradient has not
// arrived), the lookup returns its own rows' gradient and the head's
// gradient goes to the weight as usual.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

namespace liger::models {

using at::Tensor;

// What the two backwards share (held by both autograd nodes).
struct TiedEmbeddingLink : torch::CustomClassHolder {
  Tensor head_grad;          // the head's gradient, until the lookup's backward takes it
  bool lookup_done = false;  // the lookup's backward has run
};

// embedding(weight, ids).to(compute_dtype): the rows gathered in the stored
// dtype, then cast. ids int64 [...]; returns [..., hidden].
Tensor tied_lookup(const Tensor& weight, const Tensor& ids, at::ScalarType compute_dtype,
                   const c10::intrusive_ptr<TiedEmbeddingLink>& link);

// weight itself in the forward; in backward its gradient goes to `link`
// (joined by the lookup's backward), or to the weight when the lookup's
// backward has already run.
Tensor tied_head(const Tensor& weight, const c10::intrusive_ptr<TiedEmbeddingLink>& link);

}  // namespace liger::models
