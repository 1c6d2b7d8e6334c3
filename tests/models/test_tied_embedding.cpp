// The tied embedding's joined backward (models/tied_embedding.h) and the
// row add under it (kernels/embedding_grad.h) against plain autograd:
// at::embedding and the weight used directly, on the CPU.
#include "kernels/embedding_grad.h"
#include "kernels/registry.h"
#include "models/tied_embedding.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"
#include "tests/models/model_test_util.h"

#include <torch/torch.h>

#include <string>

using at::Tensor;
using liger::kernels::test::thrown_message;
using liger::models::test::max_rel;

namespace {

// ids [2, 9] over a vocab of 11: repeats, a run of one id, ids never used.
Tensor sample_ids() {
  return torch::tensor({3, 3, 0, 7, 3, 10, 7, 7, 1, 5, 5, 5, 5, 5, 3, 0, 9, 2}, torch::kLong)
      .view({2, 9});
}

}  // namespace

TEST_CASE("add_embedding_grad adds each id's rows in fp32 into its gradient row, once rounded") {
  torch::manual_seed(3);
  const Tensor ids = sample_ids();
  for (const auto wdtype : {at::kFloat, at::kBFloat16}) {
    for (const auto gdtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      INFO("weight_grad " << wdtype << ", grad_out " << gdtype);
      const Tensor base = torch::randn({11, 6}).to(wdtype);
      const Tensor grad_out = torch::randn({2, 9, 6}).to(gdtype);
      // Reference in double: the dense embedding gradient plus the base.
      const Tensor dense =
          torch::zeros({11, 6}, torch::kDouble)
              .index_add_(0, ids.reshape({-1}), grad_out.reshape({-1, 6}).to(torch::kDouble));
      const Tensor expected = (base.to(torch::kDouble) + dense).to(wdtype);
      Tensor got = base.clone();
      liger::kernels::add_embedding_grad(got, ids, grad_out);
      // fp32 sums of at most 5 rows, rounded once: exact to the storage dtype's
      // rounding of the fp32 result (half an ulp of it, or fp32 rounding).
      const double tol = wdtype == at::kFloat ? 1e-6 : 4e-3;
      CHECK(max_rel(got, expected) <= tol);
      // Rows of ids that do not occur are untouched, bit for bit.
      for (const int64_t unused : {4, 6, 8}) CHECK(torch::equal(got[unused], base[unused]));
    }
  }
  // Bad arguments are refused with the shapes named.
  Tensor g = torch::zeros({11, 6});
  CHECK(thrown_message([&] {
          liger::kernels::add_embedding_grad(g, ids, torch::zeros({2, 9, 5}));
        }).find("grad_out must be [ids..., hidden]") != std::string::npos);
  CHECK(thrown_message([&] {
          liger::kernels::add_embedding_grad(g, ids + 5, torch::zeros({2, 9, 6}));
        }).find("ids must lie in [0, 11)") != std::string::npos);
  CHECK_THROWS(liger::kernels::add_embedding_grad(g.t(), ids, torch::zeros({2, 9, 11})));
}

TEST_CASE(
    "tied_lookup + tied_head: the weight's gradient equals plain autograd's, either backward "
    "first") {
  torch::manual_seed(5);
  const Tensor ids = sample_ids();
  const Tensor w0 = torch::randn({11, 6});
  const Tensor dy = torch::randn({2, 9, 6}), dl = torch::randn({2, 9, 11});
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    // compute_dtype bf16 beside an fp32 weight: the lookup's cast inside the
    // function, the head's cast (.to) outside it, as the trainer's loss does.
    for (const auto compute : {at::kFloat, at::kBFloat16}) {
      for (const bool head_first : {false, true}) {
        INFO("weight " << dtype << ", compute " << compute
                       << (head_first ? ", head created first" : ""));
        // loss = <lookup(ids) (x) head^T, dl> + <lookup(ids), dy>: both uses in
        // one graph. Creating the head first gives its node the lower sequence
        // number: the lookup's backward then runs before it.
        auto loss_of = [&](const Tensor& lookup, const Tensor& head) {
          const Tensor logits = torch::matmul(lookup, head.to(compute).t());
          return (logits.to(at::kFloat) * dl).sum() + (lookup.to(at::kFloat) * dy).sum();
        };
        const Tensor plain_w = w0.to(dtype).clone().requires_grad_(true);
        loss_of(torch::embedding(plain_w, ids).to(compute), plain_w).backward();

        const Tensor w = w0.to(dtype).clone().requires_grad_(true);
        auto link = c10::make_intrusive<liger::models::TiedEmbeddingLink>();
        Tensor head, lookup;
        if (head_first) {
          head = liger::models::tied_head(w, link);
          lookup = liger::models::tied_lookup(w, ids, compute, link);
        } else {
          lookup = liger::models::tied_lookup(w, ids, compute, link);
          head = liger::models::tied_head(w, link);
        }
        CHECK(head.data_ptr() == w.data_ptr());  // the head is the weight itself
        CHECK(torch::equal(lookup, torch::embedding(w, ids).to(compute)));
        loss_of(lookup, head).backward();
        CHECK(link->lookup_done);
        CHECK_FALSE(link->head_grad.defined());  // nothing held back after the backward
        REQUIRE(w.grad().defined());
        CHECK(w.grad().scalar_type() == dtype);
        // The same sums in another order (fp32 rows added into the head's
        // gradient, then one rounding; plain: two gradients added).
        const double tol = dtype == at::kFloat && compute == at::kFloat ? 1e-6 : 1e-2;
        CHECK(max_rel(w.grad(), plain_w.grad()) <= tol);
      }
    }
  }
}

TEST_CASE("a tied model's gradients: the joined backward equals the separate one") {
  // The model's own loss path (lm_head_weight_for on its forward's output)
  // against the same loss on a copy of the output, which the model does not
  // recognise and so gives the plain head weight: the head's gradient then
  // reaches the weight apart from the lookup's.
  const auto cpu = c10::Device(c10::kCPU);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO("parameters " << dtype);
    const liger::models::ModelConfig config =
        liger::models::test::small_config(40, 16, 32, /*tied=*/true);
    const auto kernels =
        liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, cpu, at::kFloat);
    liger::models::Transformer model(config, kernels, at::TensorOptions().dtype(dtype), at::kFloat);
    model->init_weights(11);
    const Tensor ids =
        torch::tensor({1, 5, 5, 9, 30, 5, 2, 2, 39, 0, 5, 17}, torch::kLong).view({2, 6});
    const Tensor labels = torch::roll(ids, -1, 1);
    auto grads = [&](bool joined) {
      model->zero_grad();
      const Tensor hidden = model->forward(ids);
      const Tensor h = joined ? hidden : hidden.clone();
      CHECK(model->lm_head_weight_for(h).is_same(model->lm_head_weight()) != joined);
      const Tensor logits = model->lm_head_logits(h);
      torch::nn::functional::cross_entropy(logits.reshape({-1, 40}).to(at::kFloat),
                                           labels.reshape({-1}))
          .backward();
      std::vector<Tensor> g;
      for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
      return g;
    };
    const std::vector<Tensor> separate = grads(false), joined = grads(true);
    REQUIRE(separate.size() == joined.size());
    for (size_t i = 0; i < separate.size(); ++i) {
      INFO("parameter " << i);
      CHECK(max_rel(joined[i], separate[i]) <= (dtype == at::kFloat ? 1e-6 : 1e-2));
    }
    // Without autograd the head weight is the plain one.
    torch::NoGradGuard no_grad;
    const Tensor hidden = model->forward(ids);
    CHECK(model->lm_head_weight_for(hidden).is_same(model->lm_head_weight()));
  }
}
