// logging.tensorboard end to end: a tiny run with evaluation, interrupted
// after its checkpoint and resumed, then the run folder read back by the PyPI
// `tensorboard` package (tests/trainer/tensorboard_oracle.py): every record's
// checksums, then what TensorBoard's EventAccumulator shows. Each number of
// each metrics.jsonl row must be a scalar at the row's step, equal to the
// row's value rounded to float32 and nothing else there (the steps the
// resumed run replaced are dropped, as in metrics.jsonl); the resolved config
// and the kernel table must be texts the text plugin renders.
#include "kernels/op_list.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"
#include "tests/trainer/training_fixture.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

using namespace liger;
using nlohmann::json;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

std::vector<json> read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<json> rows;
  std::string line;
  while (std::getline(in, line)) rows.push_back(json::parse(line));
  return rows;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// metrics.jsonl key -> TensorBoard tag, as trainer/metrics.h documents it.
std::string tag_of(const std::string& key) {
  return key.rfind("eval_", 0) == 0 ? "eval/" + key.substr(5) : "train/" + key;
}

}  // namespace

TEST_CASE("TensorBoard reads every metrics.jsonl number, the config and the kernel table") {
  const std::string dir = liger::testing::fresh_dir("tensorboard");
  const std::vector<std::string> common = {
      "logging.tensorboard=true", "checkpoint.every=2",     "training.eval_every=2",
      "training.eval_batches=1",  "data.eval_fraction=0.1", "training.micro_batch_size=4"};
  // Five steps, checkpoints at 2 and 4: step 5 is logged, then lost (no checkpoint holds it).
  std::vector<std::string> first = common;
  first.push_back("training.steps=5");
  trainer::Trainer(liger::testing::tiny_config(dir, first)).run();
  // Resumed from step 4 to step 6 (a longer schedule: step 5's lr differs from the first run's).
  std::vector<std::string> resumed = common;
  resumed.insert(resumed.end(), {"training.steps=6", "checkpoint.resume=auto"});
  const config::TrainConfig resumed_config = liger::testing::tiny_config(dir, resumed);
  trainer::Trainer(resumed_config).run();

  const std::string seen = dir + "/tensorboard_seen.json";
  REQUIRE(liger::testing::run_and_print(
              liger::testing::python() + " " + liger::testing::repo_dir() +
              "/tests/trainer/tensorboard_oracle.py " + dir + " " + seen) == 0);
  const json tb = read_json(seen);

  // One file per run, each opening with the file version and marking where its run starts.
  REQUIRE(tb["files"].size() == 2);
  CHECK(tb["files"][0]["file_version"] == "brain.Event:2");
  CHECK(tb["files"][1]["file_version"] == "brain.Event:2");
  CHECK(tb["files"][0]["run_starts"] == json::array({1}));
  CHECK(tb["files"][1]["run_starts"] == json::array({5}));
  // file version, start, 2 texts, then one record per step: 5 and 2.
  CHECK(tb["files"][0]["records"] == 4 + 5);
  CHECK(tb["files"][1]["records"] == 4 + 2);

  // Every number of every row, at its step, exactly as float32; no other point.
  const std::vector<json> rows = read_metrics(dir);
  REQUIRE(rows.size() == 6);
  std::map<std::string, std::vector<std::pair<int64_t, float>>> expected;
  for (const json& row : rows) {
    for (const auto& item : row.items()) {
      if (item.key() == "step" || !item.value().is_number()) continue;
      // the double written to metrics.jsonl, rounded to float32 as TensorBoard keeps it
      expected[tag_of(item.key())].emplace_back(row["step"].get<int64_t>(),
                                                static_cast<float>(item.value().get<double>()));
    }
  }
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
                          "train/peak_mem_bytes", "train/elapsed_s", "eval/loss", "eval/ppl"}) {
    INFO(tag);
    CHECK(expected.count(tag) == 1);
  }
  CHECK(expected["eval/loss"].size() == 3);  // steps 2, 4, 6
  std::vector<std::string> seen_tags;
  for (const auto& item : tb["scalars"].items()) seen_tags.push_back(item.key());
  std::vector<std::string> expected_tags;
  for (const auto& item : expected) expected_tags.push_back(item.first);
  CHECK(seen_tags == expected_tags);
  for (const auto& [tag, points] : expected) {
    INFO(tag);
    const json& series = tb["scalars"][tag];
    REQUIRE(series.size() == points.size());
    for (size_t i = 0; i < points.size(); ++i) {
      INFO("step " << points[i].first);
      CHECK(series[i][0].get<int64_t>() == points[i].first);
      // exact: the float32 TensorBoard read is the float32 of the metrics.jsonl value
      CHECK(static_cast<float>(series[i][1].get<double>()) == points[i].second);
    }
  }

  // The resolved config at each run's first step, in a YAML code block.
  CHECK(tb["text_plugin_tags"] == json::array({"config", "kernels"}));
  const json& config_texts = tb["texts"]["config"];
  REQUIRE(config_texts.size() == 2);
  CHECK(config_texts[0][0] == 1);
  CHECK(config_texts[1][0] == 5);
  CHECK(config_texts[1][1] == "```yaml\n" + resumed_config.resolved_yaml + "```\n");
  CHECK(contains(config_texts[1][1], "tensorboard: true"));
  CHECK(contains(config_texts[1][2], "<pre>"));  // the text plugin shows it as code
  // The kernel table: a Markdown table with a row per op, rendered as an HTML table.
  const json& kernel_texts = tb["texts"]["kernels"];
  REQUIRE(kernel_texts.size() == 2);
  const std::string table = kernel_texts[1][1];
  CHECK(contains(table, "| op | backend | why |\n"));
  for (const kernels::Op op : kernels::kAllOps) {
    INFO(kernels::op_name(op));
    CHECK(contains(table, std::string("\n| ") + kernels::op_name(op) + " | "));
  }
  CHECK(contains(kernel_texts[1][2], "<table>"));
}

TEST_CASE("logging.tensorboard is off by default: no events file") {
  const std::string dir = liger::testing::fresh_dir("tensorboard_off");
  trainer::Trainer(liger::testing::tiny_config(dir, {"training.steps=1"})).run();
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    CHECK(entry.path().filename().string().rfind("events.out.tfevents.", 0) != 0);
}
