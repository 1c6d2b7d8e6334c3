// The transformer: parameter counts of the presets (on the meta device,
// nothing allocated), HF parameter names, init, causality, the families'
// traits, and identical forward/backward through the reference and the fused
// (composite) kernels.
#include "kernels/registry.h"
#include "models/model_config.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/model_test_util.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <sstream>

using liger::models::ModelConfig;
using liger::models::ModelFamily;
using liger::models::Transformer;

namespace {

ModelConfig small_config() {
  return liger::models::test::small_config(101, 40, 72, /*tied=*/false);
}

// small_config with Qwen2's q/k/v biases, or Qwen3's q/k norms over a
// head_dim of 12 (hidden 40 / 4 heads would be 10).
ModelConfig small_qwen(ModelFamily family) {
  ModelConfig c = small_config();
  liger::models::apply_family_traits(c, family);
  if (family == ModelFamily::qwen3) c.head_dim = 12;
  return c;
}

Transformer build(const ModelConfig& c, const liger::kernels::KernelSet& kernels) {
  Transformer model(c, kernels, at::TensorOptions().dtype(at::kFloat), at::kFloat);
  model->init_weights(42);
  return model;
}

}  // namespace

TEST_CASE("preset parameter counts match the published models, built on the meta device") {
  const auto meta = at::TensorOptions().dtype(at::kBFloat16).device(c10::kMeta);
  struct Expected {
    const char* preset;
    int64_t params;
  };
  // Counts of the HF models with the same config (transformers, meta device).
  for (const auto& e : {Expected{"llama3_8b", 8030261248LL}, Expected{"llama2_7b", 6738415616LL},
                        Expected{"llama3_1b", 1235814400LL}, Expected{"mistral_7b", 7241732096LL},
                        Expected{"gemma_2b", 2506172416LL}, Expected{"gemma_7b", 8537680896LL},
                        Expected{"gemma2_2b", 2614341888LL}, Expected{"gemma2_9b", 9241705984LL},
                        Expected{"qwen2_5_7b", 7615616512LL}, Expected{"qwen3_8b", 8190735360LL},
                        Expected{"qwen3_1_7b", 1720574976LL}}) {
    INFO(e.preset);
    const ModelConfig c = liger::models::preset(e.preset);
    Transformer model(c, liger::kernels::KernelSet::reference(), meta, at::kBFloat16);
    CHECK(model->num_parameters() == e.params);
    CHECK(c.num_parameters() == e.params);
    CHECK(model->lm_head_weight().device().is_meta());
  }
  CHECK_THROWS_AS(liger::models::preset("llama9"), std::invalid_argument);
}

TEST_CASE("parameters carry Hugging Face names") {
  auto model = build(small_config(), liger::kernels::KernelSet::reference());
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  const std::vector<std::string> expected_prefix = {
      "model.embed_tokens.weight",
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
      "model.layers.0.self_attn.o_proj.weight",
      "model.layers.0.mlp.gate_proj.weight",
      "model.layers.0.mlp.up_proj.weight",
      "model.layers.0.mlp.down_proj.weight",
      "model.layers.0.input_layernorm.weight",
      "model.layers.0.post_attention_layernorm.weight"};
  REQUIRE(names.size() >= expected_prefix.size());
  for (size_t i = 0; i < expected_prefix.size(); ++i) CHECK(names[i] == expected_prefix[i]);
  CHECK(names[names.size() - 2] == "model.norm.weight");
  CHECK(names.back() == "lm_head.weight");

  ModelConfig tied = small_config();
  tied.tie_embeddings = true;
  auto tied_model = build(tied, liger::kernels::KernelSet::reference());
  CHECK(tied_model->named_parameters().find("lm_head.weight") == nullptr);
  CHECK(tied_model->lm_head_weight().is_same(tied_model->model->embed_tokens->weight));
}

TEST_CASE("init is HF's: normal(0, init_std) matrices, unit norm weights, deterministic") {
  auto a = build(small_config(), liger::kernels::KernelSet::reference());
  auto b = build(small_config(), liger::kernels::KernelSet::reference());
  for (const auto& item : a->named_parameters()) {
    CHECK(torch::equal(item.value(), b->named_parameters()[item.key()]));
  }
  const at::Tensor emb = a->model->embed_tokens->weight;
  CHECK(std::abs(emb.std().item<double>() - 0.02) < 0.002);
  CHECK(torch::equal(a->model->norm->weight, torch::ones({40})));
}

TEST_CASE("causal: a later token never changes earlier hidden states") {
  auto model = build(small_config(), liger::kernels::KernelSet::reference());
  torch::NoGradGuard no_grad;
  at::Tensor ids = torch::randint(0, 101, {2, 12}, at::kLong);
  at::Tensor changed = ids.clone();
  changed.index_put_({torch::indexing::Slice(), 8},
                     (ids.index({torch::indexing::Slice(), 8}) + 1) % 101);
  const at::Tensor h1 = model->forward(ids), h2 = model->forward(changed);
  REQUIRE(h1.sizes() == std::vector<int64_t>{2, 12, 40});
  CHECK(torch::allclose(h1.narrow(1, 0, 8), h2.narrow(1, 0, 8), 0, 0));
  CHECK_FALSE(torch::allclose(h1.narrow(1, 8, 4), h2.narrow(1, 8, 4)));
}

TEST_CASE("fused (composite) and reference kernels give the same forward and gradients") {
  const auto cpu = c10::Device(c10::kCPU);
  const auto fused =
      liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, cpu, at::kFloat);
  REQUIRE(fused.backend(liger::kernels::Op::rms_norm) == liger::kernels::Backend::composite);
  for (const ModelConfig& config :
       {small_config(), small_qwen(ModelFamily::qwen2), small_qwen(ModelFamily::qwen3)}) {
    INFO("family " << config.family);
    auto reference = build(config, liger::kernels::KernelSet::reference());
    auto composite = build(config, fused);
    auto fused_params = composite->named_parameters();
    {
      // Biases and norm weights away from their init (zeros, ones), the same in both.
      torch::NoGradGuard no_grad;
      torch::manual_seed(5);
      for (auto& item : reference->named_parameters()) {
        if (item.value().dim() != 1) continue;
        item.value().add_(0.3 * torch::randn(item.value().sizes()));
        fused_params[item.key()].copy_(item.value());
      }
    }

    torch::manual_seed(3);
    at::Tensor ids = torch::randint(0, 101, {3, 17}, at::kLong);
    at::Tensor targets = torch::randint(0, 101, {3 * 17}, at::kLong);
    auto loss_of = [&](Transformer& m) {
      at::Tensor hidden = m->forward(ids);
      return torch::nn::functional::cross_entropy(m->logits(hidden).reshape({-1, 101}), targets);
    };
    at::Tensor loss_ref = loss_of(reference), loss_fused = loss_of(composite);
    CHECK(std::abs(loss_ref.item<double>() - loss_fused.item<double>()) <= 1e-5);
    loss_ref.backward();
    loss_fused.backward();
    for (const auto& item : reference->named_parameters()) {
      INFO(item.key());
      const at::Tensor expected = item.value().grad();
      const at::Tensor actual = fused_params[item.key()].grad();
      const double error = (actual - expected).abs().max().item<double>();
      const double scale = expected.abs().max().item<double>();
      INFO("max abs error " << error << " of max " << scale);
      CHECK(error <= 1e-5 * std::max(scale, 1.0));
    }
  }
}

TEST_CASE("bf16 compute with fp32 master weights: gradients land in fp32") {
  ModelConfig c = small_config();
  Transformer model(c, liger::kernels::KernelSet::reference(),
                    at::TensorOptions().dtype(at::kFloat), at::kBFloat16);
  model->init_weights(1);
  at::Tensor ids = torch::randint(0, 101, {1, 9}, at::kLong);
  at::Tensor hidden = model->forward(ids);
  CHECK(hidden.scalar_type() == at::kBFloat16);
  hidden.to(at::kFloat).sum().backward();
  CHECK(
      model->model->layers[0]->named_parameters()["self_attn.q_proj.weight"].grad().scalar_type() ==
      at::kFloat);
}

TEST_CASE("invalid dimensions are rejected with the key named") {
  ModelConfig c = small_config();
  c.num_kv_heads = 3;
  try {
    c.validate();
    FAIL("expected an error");
  } catch (const std::invalid_argument& error) {
    CHECK(std::string(error.what()).find("model.num_kv_heads") != std::string::npos);
  }
}

TEST_CASE("family traits: Gemma 2 layers carry four norms, Gemma norms start at zero (1 + w)") {
  ModelConfig c = small_config();
  liger::models::apply_family_traits(c, ModelFamily::gemma2);
  c.head_dim = 16;
  auto model = build(c, liger::kernels::KernelSet::reference());
  const auto params = model->named_parameters();
  for (const char* name :
       {"model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
        "model.layers.1.pre_feedforward_layernorm.weight",
        "model.layers.1.post_feedforward_layernorm.weight"}) {
    INFO(name);
    REQUIRE(params.find(name) != nullptr);
    CHECK(torch::equal(params[name], torch::zeros({40})));
  }
  CHECK(model->num_parameters() == c.num_parameters());
  CHECK(c.layer_sliding_window(0) == 4096);
  CHECK(c.layer_sliding_window(1) == 0);
  CHECK(c.attention_scale() == Approx(1.0 / 16.0));  // query_pre_attn_scalar 256

  ModelConfig llama = small_config();
  CHECK(build(llama, liger::kernels::KernelSet::reference())
            ->named_parameters()
            .find("model.layers.0.pre_feedforward_layernorm.weight") == nullptr);
  CHECK_THROWS_AS(liger::models::parse_model_family("gpt2"), std::invalid_argument);
}

TEST_CASE("family traits: Qwen2 biases q, k and v (zero at init), Qwen3 norms every q and k head") {
  const ModelConfig qwen2 = small_qwen(ModelFamily::qwen2);
  auto model2 = build(qwen2, liger::kernels::KernelSet::reference());
  std::vector<std::string> names;
  for (const auto& item : model2->named_parameters()) names.push_back(item.key());
  // HF's order: each projection's weight, then its bias; none on o_proj or the MLP.
  const std::vector<std::string> expected = {"model.embed_tokens.weight",
                                             "model.layers.0.self_attn.q_proj.weight",
                                             "model.layers.0.self_attn.q_proj.bias",
                                             "model.layers.0.self_attn.k_proj.weight",
                                             "model.layers.0.self_attn.k_proj.bias",
                                             "model.layers.0.self_attn.v_proj.weight",
                                             "model.layers.0.self_attn.v_proj.bias",
                                             "model.layers.0.self_attn.o_proj.weight",
                                             "model.layers.0.mlp.gate_proj.weight"};
  REQUIRE(names.size() > expected.size());
  for (size_t i = 0; i < expected.size(); ++i) CHECK(names[i] == expected[i]);
  const auto params2 = model2->named_parameters();
  CHECK(torch::equal(params2["model.layers.1.self_attn.k_proj.bias"], torch::zeros({20})));
  CHECK(model2->num_parameters() == qwen2.num_parameters());

  const ModelConfig qwen3 = small_qwen(ModelFamily::qwen3);
  auto model3 = build(qwen3, liger::kernels::KernelSet::reference());
  const auto params3 = model3->named_parameters();
  REQUIRE(params3.find("model.layers.0.self_attn.q_norm.weight") != nullptr);
  CHECK(torch::equal(params3["model.layers.0.self_attn.q_norm.weight"], torch::ones({12})));
  CHECK(params3["model.layers.1.self_attn.k_norm.weight"].sizes() == at::IntArrayRef({12}));
  CHECK(params3["model.layers.0.self_attn.q_proj.weight"].sizes() == at::IntArrayRef({48, 40}));
  CHECK(params3.find("model.layers.0.self_attn.q_proj.bias") == nullptr);
  CHECK(model3->num_parameters() == qwen3.num_parameters());

  // Each trait changes the function: a bias on k, a k_norm weight.
  torch::NoGradGuard no_grad;
  const at::Tensor ids = torch::randint(0, 101, {1, 7}, at::kLong);
  const at::Tensor before2 = model2->forward(ids), before3 = model3->forward(ids);
  params2["model.layers.0.self_attn.k_proj.bias"].fill_(0.5);
  params3["model.layers.0.self_attn.k_norm.weight"].fill_(2.0);
  CHECK((model2->forward(ids) - before2).abs().max().item<double>() > 1e-4);
  CHECK((model3->forward(ids) - before3).abs().max().item<double>() > 1e-4);

  // Qwen's sliding window: the layers from sliding_window_first_layer on.
  ModelConfig windowed = qwen2;
  windowed.num_layers = 3;
  windowed.sliding_window = 5;
  windowed.sliding_window_first_layer = 1;
  CHECK(windowed.layer_sliding_window(0) == 0);
  CHECK(windowed.layer_sliding_window(1) == 5);
  CHECK(windowed.layer_sliding_window(2) == 5);
}

TEST_CASE("the final softcap bounds logits() but not lm_head_logits() (the loss caps those)") {
  ModelConfig c = small_config();
  c.final_softcap = 0.05;
  auto model = build(c, liger::kernels::KernelSet::reference());
  torch::NoGradGuard no_grad;
  const at::Tensor hidden = model->forward(torch::randint(0, 101, {1, 6}, at::kLong));
  CHECK(model->logits(hidden).abs().max().item<double>() <= 0.05);
  CHECK(model->lm_head_logits(hidden).abs().max().item<double>() > 0.05);
}

TEST_CASE("ModelConfig survives its JSON form (checkpoints' model_config.json)") {
  ModelConfig c = liger::models::preset("gemma2_9b");
  c.rope_scaling.type = liger::models::RopeScalingType::llama3;
  c.eos_token_ids = {1, 107};
  const ModelConfig back =
      liger::models::model_config_from_json(liger::models::model_config_to_json(c), "x");
  CHECK(liger::models::model_config_to_json(back) == liger::models::model_config_to_json(c));
  CHECK(back.post_norms);
  CHECK(back.eos_token_ids == c.eos_token_ids);
  CHECK_THROWS_AS(liger::models::model_config_from_json("{}", "x"), std::invalid_argument);

  // The Qwen traits go through it too; a file written before them reads them as off.
  ModelConfig qwen = liger::models::preset("qwen2_5_7b");
  qwen.qk_norm = true;
  qwen.sliding_window = 64;
  qwen.sliding_window_first_layer = 20;
  const ModelConfig qwen_back =
      liger::models::model_config_from_json(liger::models::model_config_to_json(qwen), "x");
  CHECK(qwen_back.family == ModelFamily::qwen2);
  CHECK(qwen_back.qkv_bias);
  CHECK(qwen_back.qk_norm);
  CHECK(qwen_back.sliding_window_first_layer == 20);
  auto older = nlohmann::json::parse(liger::models::model_config_to_json(c));
  for (const char* key : {"qkv_bias", "qk_norm", "sliding_window_first_layer"}) older.erase(key);
  const ModelConfig old_back = liger::models::model_config_from_json(older.dump(), "x");
  CHECK_FALSE(old_back.qkv_bias);
  CHECK_FALSE(old_back.qk_norm);
  CHECK(old_back.sliding_window_first_layer == 0);

  // The modes are written by name, and a name the parser does not know is
  // an error naming the file and the known names.
  std::string text = liger::models::model_config_to_json(c);
  for (const char* field : {"\"family\": \"gemma2\"", "\"mlp_activation\": \"gelu_tanh\"",
                            "\"norm_casting\": \"gemma\"", "\"type\": \"llama3\""}) {
    INFO(field);
    CHECK(text.find(field) != std::string::npos);
  }
  text.replace(text.find("\"gelu_tanh\""), 11, "\"gelu\"");
  try {
    liger::models::model_config_from_json(text, "step-9/model_config.json");
    FAIL("expected an error");
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    INFO(message);
    CHECK(message.find("step-9/model_config.json") != std::string::npos);
    CHECK(message.find("mlp_activation 'gelu' is unknown (known: silu, gelu_tanh)") !=
          std::string::npos);
  }
}

TEST_CASE("mode names: every value parses back from its name; unknown names list the known ones") {
  using namespace liger::models;
  for (ModelFamily family : {ModelFamily::llama, ModelFamily::mistral, ModelFamily::gemma,
                             ModelFamily::gemma2, ModelFamily::qwen2, ModelFamily::qwen3}) {
    CHECK(parse_model_family(to_string(family)) == family);
  }
  for (MlpActivation activation : {MlpActivation::silu, MlpActivation::gelu_tanh}) {
    CHECK(parse_mlp_activation(to_string(activation)) == activation);
  }
  for (NormCasting casting : {NormCasting::llama, NormCasting::gemma, NormCasting::none}) {
    CHECK(parse_norm_casting(to_string(casting)) == casting);
  }
  for (RopeScalingType type : {RopeScalingType::none, RopeScalingType::llama3}) {
    CHECK(parse_rope_scaling_type(to_string(type)) == type);
  }
  CHECK(to_string(ModelFamily::gemma2) == "gemma2");
  std::ostringstream printed;
  printed << ModelFamily::mistral << " " << MlpActivation::gelu_tanh << " " << NormCasting::none
          << " " << RopeScalingType::llama3;
  CHECK(printed.str() == "mistral gelu_tanh none llama3");
  try {
    parse_model_family("gpt2");
    FAIL("expected an error");
  } catch (const std::invalid_argument& error) {
    CHECK(std::string(error.what()) ==
          "model family 'gpt2' is unknown (known: llama, mistral, gemma, gemma2, qwen2, qwen3)");
  }
  CHECK_THROWS_AS(parse_norm_casting("fp32"), std::invalid_argument);
  CHECK_THROWS_AS(parse_rope_scaling_type("yarn"), std::invalid_argument);
}

TEST_CASE(
    "packed documents: document ids + restarted positions compute each document as if alone") {
  auto model = build(small_config(), liger::kernels::KernelSet::reference());
  torch::NoGradGuard no_grad;
  torch::manual_seed(9);
  const at::Tensor ids = torch::randint(0, 101, {1, 12}, at::kLong);
  const at::Tensor positions = torch::cat({torch::arange(5), torch::arange(7)}).unsqueeze(0);
  const at::Tensor documents =
      torch::cat({torch::zeros({5}), torch::ones({7})}).to(at::kLong).unsqueeze(0);
  const at::Tensor packed = model->forward(ids, positions, documents);
  const at::Tensor alone = model->forward(ids.narrow(1, 5, 7));
  const double error = (packed.narrow(1, 5, 7) - alone).abs().max().item<double>();
  INFO("max |packed - alone| " << error);
  CHECK(error <= 1e-5);
  // Without the mask the second document sees the first: the check can fail.
  const at::Tensor leaky = model->forward(ids, positions);
  CHECK((leaky.narrow(1, 5, 7) - alone).abs().max().item<double>() > 1e-3);
}
