#include "models/tied_embedding.h"

#include "kernels/embedding_grad.h"

#include <torch/autograd.h>
#include <torch/torch.h>

namespace liger::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

c10::intrusive_ptr<TiedEmbeddingLink> link_of(AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<TiedEmbeddingLink>(
      ctx->saved_data.at("link").toCapsule());
}

class TiedLookup : public torch::autograd::Function<TiedLookup> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& weight, const Tensor& ids,
                        at::ScalarType compute_dtype,
                        const c10::intrusive_ptr<TiedEmbeddingLink>& link) {
    ctx->saved_data["link"] = c10::IValue::make_capsule(link);
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["vocab"] = weight.size(0);
    ctx->save_for_backward({ids});
    // Gather rows in the stored dtype, then cast only those rows.
    return at::embedding(weight, ids).to(compute_dtype);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const c10::intrusive_ptr<TiedEmbeddingLink> link = link_of(ctx);
    const Tensor ids = ctx->get_saved_variables()[0];
    const Tensor& grad_out = grad_outputs[0];
    link->lookup_done = true;
    Tensor grad;
    if (link->head_grad.defined()) {
      grad = std::move(link->head_grad);  // the link holds it no more
      // The head's gradient, added into in place when nothing else holds it
      // (the fused loss's and a GEMM's are fresh tensors), else a copy.
      const bool exclusive =
          grad.is_contiguous() && grad.use_count() == 1 && grad.storage().use_count() == 1;
      if (!exclusive) grad = grad.clone(at::MemoryFormat::Contiguous);
    } else {
      // The head's gradient has not arrived (or never will): the lookup's own.
      grad = at::zeros({ctx->saved_data["vocab"].toInt(), grad_out.size(-1)},
                       grad_out.options().dtype(ctx->saved_data["weight_dtype"].toScalarType()));
    }
    if (grad_out.defined()) kernels::add_embedding_grad(grad, ids, grad_out);
    return {grad, Tensor(), Tensor(), Tensor()};
  }
};

class TiedHead : public torch::autograd::Function<TiedHead> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& weight,
                        const c10::intrusive_ptr<TiedEmbeddingLink>& link) {
    ctx->saved_data["link"] = c10::IValue::make_capsule(link);
    return weight.view_as(weight);  // a view: the same storage, a new autograd edge
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const c10::intrusive_ptr<TiedEmbeddingLink> link = link_of(ctx);
    const Tensor& grad = grad_outputs[0];
    if (link->lookup_done || !grad.defined()) return {grad, Tensor()};
    // Held for the lookup's backward; summed if the head was used twice.
    link->head_grad = link->head_grad.defined() ? link->head_grad + grad : grad;
    return {Tensor(), Tensor()};
  }
};

}  // namespace

Tensor tied_lookup(const Tensor& weight, const Tensor& ids, at::ScalarType compute_dtype,
                   const c10::intrusive_ptr<TiedEmbeddingLink>& link) {
  return TiedLookup::apply(weight, ids, compute_dtype, link);
}

Tensor tied_head(const Tensor& weight, const c10::intrusive_ptr<TiedEmbeddingLink>& link) {
  return TiedHead::apply(weight, link);
}

}  // namespace liger::models
