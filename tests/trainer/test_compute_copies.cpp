// Mixed precision on 16-bit compute copies (trainer/compute_copies.h): the
// model moved onto bf16 copies computes what the fp32 model computes when it
// casts each weight where it is used, and the fp32 values stay where they were.
#include "kernels/registry.h"
#include "models/model_config.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/model_test_util.h"
#include "trainer/compute_copies.h"

#include <torch/torch.h>

#include <map>
#include <string>

using liger::models::ModelConfig;
using liger::models::Transformer;

namespace {

ModelConfig small_config(bool tied) {
  return liger::models::test::small_config(61, 32, 48, tied);
}

Transformer build(const ModelConfig& c) {
  Transformer model(c, liger::kernels::KernelSet::reference(),
                    at::TensorOptions().dtype(at::kFloat), at::kBFloat16);
  model->init_weights(5);
  return model;
}

}  // namespace

TEST_CASE("compute copies: the model on bf16 copies gives the casting model's loss and gradients") {
  for (const bool tied : {false, true}) {
    INFO((tied ? "tied" : "untied") << " embeddings");
    Transformer casting = build(small_config(tied)), copied = build(small_config(tied));
    std::map<std::string, const void*> storage;
    for (const auto& item : copied->named_parameters())
      storage[item.key()] = item.value().data_ptr();

    const liger::trainer::ComputeCopies moved =
        liger::trainer::move_to_compute_copies(*copied, at::kBFloat16);
    auto reference = casting->named_parameters();
    REQUIRE(moved.masters.size() == reference.size());
    REQUIRE(moved.copies.size() == reference.size());
    for (size_t k = 0; k < moved.masters.size(); ++k) {
      const auto& [name, master] = moved.masters[k];
      INFO(name);
      CHECK(master.scalar_type() == at::kFloat);
      CHECK(master.data_ptr() == storage.at(name));  // the fp32 data was not copied
      CHECK_FALSE(master.requires_grad());
      CHECK(torch::equal(master, reference[name]));
      const at::Tensor& copy = moved.copies[k];
      CHECK(copy.scalar_type() == at::kBFloat16);
      CHECK(copy.requires_grad());
      CHECK(torch::equal(copy, master.to(at::kBFloat16)));
      // The model's own parameter is the copy now.
      CHECK(copied->named_parameters()[name].data_ptr() == copy.data_ptr());
    }

    torch::manual_seed(8);
    const at::Tensor ids = torch::randint(0, 61, {2, 13}, at::kLong);
    const at::Tensor targets = torch::randint(0, 61, {2 * 13}, at::kLong);
    auto loss_of = [&](Transformer& m) {
      const at::Tensor logits = m->logits(m->forward(ids)).reshape({-1, 61}).to(at::kFloat);
      return torch::nn::functional::cross_entropy(logits, targets);
    };
    const at::Tensor loss_casting = loss_of(casting), loss_copied = loss_of(copied);
    CHECK(loss_copied.item<double>() ==
          loss_casting.item<double>());  // the same bf16 weights: bitwise
    loss_casting.backward();
    loss_copied.backward();
    for (size_t k = 0; k < moved.masters.size(); ++k) {
      const std::string& name = moved.masters[k].first;
      INFO(name);
      const at::Tensor expected = reference[name].grad();
      const at::Tensor actual = moved.copies[k].grad();
      REQUIRE(actual.defined());
      CHECK(actual.scalar_type() == at::kBFloat16);
      CHECK_FALSE(moved.masters[k].second.grad().defined());
      const at::Tensor widened = actual.to(at::kFloat);  // cast: bf16 to fp32, exact
      if (name.find("embed_tokens") == std::string::npos) {
        // Each matrix's gradient is its one bf16 matmul gradient, which the
        // casting model widens exactly: bitwise.
        CHECK(torch::equal(widened, expected));
      } else {
        // The embedding sums repeated tokens' rows (and, tied, the lm_head's
        // gradient) in bf16 instead of fp32: within bf16 rounding.
        const double error =
            ((widened - expected).abs().max() / expected.abs().max()).item<double>();
        INFO("max error " << error << " of the largest element");
        CHECK(error <= 2e-2);
      }
    }
  }
}

TEST_CASE("compute copies need fp32 parameters") {
  Transformer model(small_config(false), liger::kernels::KernelSet::reference(),
                    at::TensorOptions().dtype(at::kBFloat16), at::kBFloat16);
  CHECK_THROWS(liger::trainer::move_to_compute_copies(*model, at::kBFloat16));
}
