// The shipped family configs end to end on the CPU: configs/tiny_gemma2.yaml,
// configs/tiny_mistral.yaml, configs/tiny_qwen3.yaml and configs/tiny_mixtral.yaml train (shrunk
// further by overrides to take seconds) and their losses fall; the end-of-run sample goes through
// the KV cache; the final checkpoint exports to a Hugging Face folder that loads back into the same
// function; every family preset config resolves to the published parameter count.
#include "kernels/registry.h"
#include "models/hf.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"
#include "trainer/config.h"
#include "trainer/export.h"
#include "trainer/model_setup.h"
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using namespace liger;

namespace {

std::vector<double> losses(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<double> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return out;
}

double mean(const std::vector<double>& v, size_t from, size_t count) {
  double sum = 0.0;
  for (size_t i = from; i < from + count; ++i) sum += v[i];
  return sum / static_cast<double>(count);
}

// The shipped config, made small: fewer/narrower layers, short sequences,
// a window shorter than them, a few steps.
config::TrainConfig shrunk(const std::string& name, const std::string& out,
                           std::vector<std::string> extra) {
  const std::string repo = testing::repo_dir();
  std::vector<std::string> overrides = {
      "data.train=[" + repo + "/data/samples/tinyshakespeare.txt]",
      "data.tokenizer=" + repo + "/data/samples/shakespeare_bpe1024.model",
      "checkpoint.output_dir=" + out,
      "model.hidden_size=64",
      "model.intermediate_size=128",
      "model.num_layers=2",
      "model.num_heads=4",
      "model.num_kv_heads=2",
      "model.sliding_window=12",
      "data.seq_len=32",
      "training.device=cpu",
      "training.steps=60",
      "training.micro_batch_size=8",
      "training.lr=0.01",
      "training.warmup_steps=3",
      "training.threads=2",
      "checkpoint.every=0",
      "checkpoint.keep_last=0",
      "checkpoint.save_final=true",
      "logging.level=warn",
      "logging.progress_bar=off",
      "logging.sample_tokens=12",
      "logging.sample_temperature=0",
  };
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return config::load_config(repo + "/configs/" + name, overrides);
}

}  // namespace

TEST_CASE(
    "tiny Gemma 2, Mistral, Qwen3 and Mixtral configs train on the CPU, losses fall, exports load "
    "back") {
  struct Case {
    const char* config;
    models::ModelFamily family;
    std::vector<std::string> extra;
  };
  for (const Case& c : {Case{"tiny_gemma2.yaml",
                             models::ModelFamily::gemma2,
                             {"model.head_dim=16", "model.query_pre_attn_scalar=16"}},
                        Case{"tiny_mistral.yaml", models::ModelFamily::mistral, {}},
                        Case{"tiny_qwen3.yaml", models::ModelFamily::qwen3, {}},
                        Case{"tiny_mixtral.yaml",
                             models::ModelFamily::mixtral,
                             {"model.router_z_loss_coef=0.001"}}}) {
    INFO(c.config);
    const std::string out = testing::temp_dir("train_" + models::to_string(c.family));
    trainer::Trainer t(shrunk(c.config, out, c.extra));
    const models::ModelConfig& mc = t.model().config();
    CHECK(mc.family == c.family);
    CHECK(mc.sliding_window == 12);
    if (c.family == models::ModelFamily::gemma2) {
      CHECK(mc.post_norms);
      CHECK(mc.final_softcap == 30.0);
      CHECK(mc.layer_sliding_window(1) == 0);
    }
    if (c.family == models::ModelFamily::qwen3) {
      CHECK(mc.qk_norm);
      CHECK(mc.resolved_head_dim() == 64);  // the preset's, not hidden / heads = 16
    }
    if (c.family == models::ModelFamily::mixtral) {
      CHECK(mc.num_experts == 4);
      CHECK(mc.num_experts_per_token == 2);
      CHECK(mc.output_router_logits);
    }
    const trainer::TrainResult result = t.run();
    REQUIRE(result.final_step == 60);
    if (c.family == models::ModelFamily::mixtral) {
      // The router losses are logged beside the LM loss, every step.
      std::ifstream in(out + "/metrics.jsonl");
      int rows = 0;
      for (std::string line; std::getline(in, line); ++rows) {
        const nlohmann::json row = nlohmann::json::parse(line);
        INFO(line);
        REQUIRE(row.contains("aux_loss"));
        REQUIRE(row.contains("z_loss"));
        // 2 of 4 experts: the load-balancing loss is 2 when routing is even, at most 4.
        CHECK(row.at("aux_loss").get<double>() >= 0.5);
        CHECK(row.at("aux_loss").get<double>() <= 4.0);
        CHECK(row.at("z_loss").get<double>() > 0.0);
      }
      CHECK(rows == 60);
    }
    const std::vector<double> l = losses(out);
    REQUIRE(l.size() == 60);
    INFO("first losses " << l[0] << " " << l[1] << " " << l[2] << ", last " << l[57] << " " << l[58]
                         << " " << l[59]);
    CHECK(mean(l, 57, 3) < 0.85 * mean(l, 0, 3));
    CHECK_FALSE(result.sample.empty());  // the end-of-run sample (KV-cached generation)

    // Export the final checkpoint; the HF folder loads back into the same function.
    const std::string hf = out + "/hf";
    trainer::export_checkpoint(result.checkpoint_path, hf, std::nullopt,
                               64 * 1024);  // sharded, the run's dtype
    CHECK(fs::exists(hf + "/model.safetensors.index.json"));
    const models::ModelConfig back = models::read_hf_config(hf);
    CHECK(back.family == c.family);
    models::Transformer reloaded(back, kernels::KernelSet::reference(),
                                 at::TensorOptions().dtype(at::kFloat), at::kFloat);
    models::load_hf_weights(*reloaded, hf);
    torch::NoGradGuard no_grad;
    const at::Tensor ids = torch::randint(0, 1024, {2, 30}, at::kLong);
    const at::Tensor expected = t.model().logits(t.model().forward(ids));
    const at::Tensor actual = reloaded->logits(reloaded->forward(ids));
    CHECK(testing::relative_to_max(actual, expected) <= 1e-5);

    // liger-generate's loader: the checkpoint folder rebuilds the same model.
    trainer::LoadedModel loaded =
        trainer::load_checkpoint_model(result.checkpoint_path, config::Device::cpu);
    CHECK(torch::allclose(loaded.model->logits(loaded.model->forward(ids)), expected, 1e-5, 1e-5));
  }
}

TEST_CASE("family preset configs resolve to the published parameter counts") {
  struct Expected {
    const char* config;
    int64_t params;
  };
  for (const auto& e :
       {Expected{"mistral_7b.yaml", 7241732096LL}, Expected{"gemma_2b.yaml", 2506172416LL},
        Expected{"gemma_7b.yaml", 8537680896LL}, Expected{"gemma2_2b.yaml", 2614341888LL},
        Expected{"gemma2_9b.yaml", 9241705984LL}, Expected{"qwen3_8b.yaml", 8190735360LL},
        Expected{"qwen3_1_7b.yaml", 1720574976LL}, Expected{"qwen2_5_7b.yaml", 7615616512LL},
        Expected{"mixtral_8x7b.yaml", 46702792704LL},
        Expected{"bench/moe_h100.yaml", 4728358912LL}}) {
    INFO(e.config);
    const auto config = config::load_config(testing::repo_dir() + "/configs/" + e.config);
    const models::ModelConfig mc = trainer::resolve_model_config(config, 1024);
    CHECK(mc.num_parameters() == e.params);
    models::Transformer meta(mc, kernels::KernelSet::reference(),
                             at::TensorOptions().dtype(at::kBFloat16).device(c10::kMeta),
                             at::kBFloat16);
    CHECK(meta->num_parameters() == e.params);
  }
}

TEST_CASE("model.hf_path: the architecture comes from config.json, overriding it is an error") {
  const std::string dir = testing::temp_dir("hf_path");
  models::ModelConfig c;
  models::apply_family_traits(c, models::ModelFamily::mistral);
  c.vocab_size = 1024;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 1;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.max_seq_len = 64;
  c.sliding_window = 9;
  models::Transformer model(c, kernels::KernelSet::reference(),
                            at::TensorOptions().dtype(at::kFloat), at::kFloat);
  model->init_weights(3);
  models::save_hf_model(*model, dir);

  const std::string repo = testing::repo_dir();
  const std::vector<std::string> base = {
      "model.hf_path=" + dir, "data.tokenizer=" + repo + "/data/samples/shakespeare_bpe1024.model",
      "data.seq_len=32"};
  const auto config = config::parse_config("", "test", base);
  const models::ModelConfig resolved = trainer::resolve_model_config(config, 1024);
  CHECK(resolved.family == models::ModelFamily::mistral);
  CHECK(resolved.sliding_window == 9);
  CHECK(resolved.hidden_size == 32);

  auto overridden = base;
  overridden.push_back("model.hidden_size=64");
  try {
    trainer::resolve_model_config(config::parse_config("", "test", overridden), 1024);
    FAIL("expected a ConfigError");
  } catch (const config::ConfigError& error) {
    CHECK(std::string(error.what()).find("model.hidden_size") != std::string::npos);
  }
  try {
    trainer::resolve_model_config(
        config::parse_config("", "test", {"model.hf_path=/nonexistent/m"}), 1024);
    FAIL("expected a ConfigError");
  } catch (const config::ConfigError& error) {
    CHECK(std::string(error.what()).find("/nonexistent/m") != std::string::npos);
  }
}
