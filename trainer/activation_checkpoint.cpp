#include "trainer/activation_checkpoint.h"

#include <torch/torch.h>

namespace liger::trainer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Holds the layer function between forward and backward (autograd's saved
// data keeps custom objects as capsules).
struct LayerHolder : torch::CustomClassHolder {
  explicit LayerHolder(models::LayerHooks::LayerFn fn) : layer(std::move(fn)) {}
  models::LayerHooks::LayerFn layer;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // input_grad: whether x itself needs a gradient (false when x only stands
  // in as the node's input, see checkpointed_layer).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<LayerHolder> holder, bool input_grad) {
    at::Tensor y;
    {
      at::NoGradGuard no_grad;  // nothing of the layer's graph is kept
      y = holder->layer(x);
    }
    ctx->save_for_backward({x});
    ctx->saved_data["layer"] = at::IValue::make_capsule(std::move(holder));
    ctx->saved_data["input_grad"] = input_grad;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    auto holder =
        c10::static_intrusive_pointer_cast<LayerHolder>(ctx->saved_data["layer"].toCapsule());
    // Recompute with gradients on, from a leaf copy of the input.
    const bool input_grad = ctx->saved_data["input_grad"].toBool();
    at::Tensor x_leaf = x.detach().requires_grad_(input_grad);
    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      y = holder->layer(x_leaf);
    }
    if (y.requires_grad()) torch::autograd::backward({y}, {grad_outputs[0]});
    return {input_grad ? x_leaf.grad() : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed_layer(const models::LayerHooks::LayerFn& layer, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return layer(x);
  // A layer input that needs no gradient (LoRA: the frozen embeddings' output
  // into the first layer) would leave the node out of the graph, and with it
  // the layer's trainable adapters: a detached copy that requires grad stands
  // in as the node's input, and backward computes no gradient for it.
  const bool input_grad = x.requires_grad();
  const at::Tensor input = input_grad ? x : x.detach().requires_grad_(true);
  return CheckpointFunction::apply(input, c10::make_intrusive<LayerHolder>(layer), input_grad);
}

at::Tensor CheckpointEveryLayer::run_layer(int64_t /*index*/, const at::Tensor& x,
                                           const LayerFn& layer) {
  return checkpointed_layer(layer, x);
}

}  // namespace liger::trainer
