// Evaluation (training.eval_every): the validation loss written to
// metrics.jsonl equals a hand computation on the same held-out batch; isolated
// packing hands position ids to the model; the config rules around it.
#include "data/dataset.h"
#include "data/loader.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/trainer/training_fixture.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

using namespace liger;

namespace {

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Mean cross entropy over the non-ignored labels of `batch`, by hand: the
// model's hidden states, lm_head as a plain matmul, log_softmax, gather.
double hand_eval_loss(models::TransformerImpl& model, data::Batch batch, bool with_positions) {
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> shape{batch.batch_size, batch.seq_len};
  const at::Tensor ids = torch::from_blob(batch.input_ids.data(), shape, at::kLong).clone();
  const at::Tensor labels =
      torch::from_blob(batch.labels.data(), shape, at::kLong).clone().reshape({-1});
  // Isolated packing: restarted positions and a per-document attention mask.
  at::Tensor positions, documents;
  if (with_positions) {
    positions = torch::from_blob(batch.position_ids.data(), shape, at::kLong).clone();
    documents = torch::from_blob(batch.document_ids.data(), shape, at::kLong).clone();
  }
  const at::Tensor hidden =
      model.forward(ids, positions, documents).reshape({-1, model.config().hidden_size});
  const at::Tensor logits =
      torch::matmul(hidden.to(at::kDouble), model.lm_head_weight().to(at::kDouble).t());
  const at::Tensor log_probs = torch::log_softmax(logits, -1);
  const at::Tensor keep = labels != -100;
  const at::Tensor picked = log_probs.index({keep}).gather(1, labels.index({keep}).unsqueeze(1));
  return -picked.sum().item<double>() / static_cast<double>(keep.sum().item<int64_t>());
}

// The held-out windows the trainer evaluates for `config` (data.eval_fraction).
std::shared_ptr<const data::PackedDataset> held_out(const config::TrainConfig& config,
                                                    int64_t model_vocab) {
  auto tokenizer = data::load_tokenizer(config.data.tokenizer);
  data::DataSpec spec;
  spec.files = config.data.train;
  spec.seq_len = config.data.seq_len;
  spec.packing = config.data.packing;
  spec.model_vocab_size = model_vocab;
  return data::hold_out_windows(data::build_dataset(spec, *tokenizer), config.data.eval_fraction)
      .second;
}

}  // namespace

TEST_CASE(
    "eval_loss and eval_ppl are written every eval_every steps and match a hand computation") {
  for (const std::string packing : {"cross_document", "isolated"}) {
    INFO("data.packing = " << packing);
    const std::string dir = liger::testing::fresh_dir("eval-" + packing);
    const auto config = liger::testing::tiny_config(
        dir, {"training.steps=4", "training.eval_every=2", "training.eval_batches=1",
              "training.micro_batch_size=4", "data.eval_fraction=0.1", "data.packing=" + packing});
    trainer::Trainer t(config);
    t.run();

    const auto rows = read_metrics(dir);
    REQUIRE(rows.size() == 4);
    CHECK_FALSE(rows[0].contains("eval_loss"));
    CHECK_FALSE(rows[2].contains("eval_ppl"));
    REQUIRE(rows[1].contains("eval_loss"));
    REQUIRE(rows[3].contains("eval_loss"));
    const double eval_loss = rows[3].at("eval_loss").get<double>();
    CHECK(rows[3].at("eval_ppl").get<double>() == Approx(std::exp(eval_loss)).epsilon(1e-12));
    CHECK(eval_loss !=
          rows[1].at("eval_loss").get<double>());  // the model moved between evaluations

    // The same batch by hand: the first micro-batch (eval_batches = 1) of the
    // held-out windows, through the model as it is after the last step.
    const auto eval = held_out(config, t.model().config().vocab_size);
    const data::Batch batch =
        data::batch_of_windows(*eval, 0, std::min<int64_t>(4, eval->num_windows()));
    const bool isolated = packing == "isolated";
    const double expected = hand_eval_loss(t.model(), batch, isolated);
    INFO("eval_loss " << eval_loss << ", by hand " << expected);
    CHECK(eval_loss == Approx(expected).epsilon(1e-5));
    if (isolated) {
      // The positions matter: without them the same batch gives another loss.
      CHECK(std::abs(hand_eval_loss(t.model(), batch, false) - expected) > 1e-6);
    }
  }
}

TEST_CASE("isolated packing reaches training: restarted positions change the update") {
  auto params_after = [](const std::string& packing) {
    const auto config =
        liger::testing::tiny_config(liger::testing::fresh_dir("pack-" + packing),
                                    {"training.steps=3", "data.packing=" + packing});
    trainer::Trainer t(config);
    t.run();
    liger::testing::Parameters params;
    for (const auto& item : t.model().named_parameters())
      params[item.key()] = item.value().detach().clone();
    return params;
  };
  // With BOS on, both modes have the same labels: only the position ids differ.
  // (Several steps: the first AdamW step moves every weight by about lr * sign(grad).)
  CHECK(liger::testing::max_relative_difference(params_after("isolated"),
                                                params_after("cross_document")) > 1e-7);
}

TEST_CASE("evaluation on data.eval files") {
  const std::string dir = liger::testing::fresh_dir("eval-files");
  const auto config = liger::testing::tiny_config(
      dir, {"training.steps=1", "training.eval_every=1",
            "data.eval=[" + liger::testing::prompt_completion_file() + "]"});
  trainer::Trainer t(config);
  t.run();
  const auto rows = read_metrics(dir);
  REQUIRE(rows.size() == 1);
  const double loss = rows[0].at("eval_loss").get<double>();
  CHECK(std::isfinite(loss));
  CHECK(loss > 0.0);
}

TEST_CASE("evaluation config errors name the keys and the fix") {
  const std::string dir = liger::testing::fresh_dir("eval-config");
  auto message = [&](const std::vector<std::string>& overrides) {
    try {
      liger::testing::tiny_config(dir, overrides);
    } catch (const config::ConfigError& error) {
      return std::string(error.what());
    }
    return std::string("<no ConfigError>");
  };
  const std::string no_data = message({"training.eval_every=10"});
  CHECK(no_data.find("training.eval_every = 10") != std::string::npos);
  CHECK(no_data.find("data.eval_fraction") != std::string::npos);
  const std::string both = message({"data.eval=[a.jsonl]", "data.eval_fraction=0.1"});
  CHECK(both.find("data.eval and data.eval_fraction") != std::string::npos);
  CHECK(message({"data.eval_fraction=0.7"}).find("data.eval_fraction") != std::string::npos);
  CHECK(message({"data.packing=blocks"}).find("cross_document, isolated") != std::string::npos);
  const auto ok =
      liger::testing::tiny_config(dir, {"data.format=chat", "data.chat_template=gemma",
                                        "data.token_dtype=uint32", "data.bos_token=<s>"});
  CHECK(ok.data.chat_template == "gemma");
  CHECK(ok.data.token_dtype == "uint32");
  CHECK(ok.data.bos_token == "<s>");
}
