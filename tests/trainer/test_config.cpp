// Config: defaults, overrides, and the messages a user sees for mistakes.
#include "tests/catch.h"
#include "trainer/config.h"
#include "trainer/config_schema.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using liger::config::ConfigError;
using liger::config::parse_config;

namespace {

std::string source_dir() {
  const char* dir = std::getenv("LIGER_SOURCE_DIR");
  return dir ? dir : ".";
}

// The message of the ConfigError that `yaml` + `overrides` raise ("" if none).
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, "test.yaml", overrides);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("an empty config gives the documented defaults") {
  const auto c = parse_config("", "empty.yaml");
  CHECK(c.model.preset == "tiny");
  CHECK(c.training.steps == 300);
  CHECK(c.training.micro_batch_size == 8);
  CHECK(c.training.gradient_accumulation_steps == 1);
  CHECK(c.kernels.fused_linear_cross_entropy);
  CHECK_FALSE(c.kernels.cross_entropy);
  CHECK(c.kernels.attention);
  CHECK(c.data.train == std::vector<std::string>{"data/samples/tinyshakespeare.txt"});
  CHECK_FALSE(c.model.hidden_size.has_value());
  CHECK(c.checkpoint.resume.mode == liger::config::ResumeMode::none);
  CHECK_FALSE(c.logging.tensorboard);
}

TEST_CASE("file values and --set overrides are applied, --set last") {
  const auto c = parse_config(
      "training:\n  steps: 50\n  lr: 0.01\nmodel:\n  hidden_size: 64\n", "a.yaml",
      {"training.steps=7", "data.train=[x.txt, y.jsonl]", "kernels.strict=true",
       "model.tie_embeddings=false", "logging.tensorboard=true", "kernels.attention=false"});
  CHECK(c.training.steps == 7);
  CHECK(c.training.lr == 0.01);
  CHECK(c.model.hidden_size == 64);
  CHECK(c.data.train == std::vector<std::string>{"x.txt", "y.jsonl"});
  CHECK(c.kernels.strict);
  CHECK_FALSE(c.kernels.attention);
  CHECK(c.model.tie_embeddings == false);
  CHECK(c.logging.tensorboard);
  // The resolved YAML round-trips to the same config.
  const auto again = parse_config(c.resolved_yaml, "resolved.yaml");
  CHECK(again.training.steps == 7);
  CHECK(again.data.train == c.data.train);
  CHECK(again.model.hidden_size == 64);
  CHECK(again.model.tie_embeddings == false);
  CHECK_FALSE(again.model.num_layers.has_value());
}

TEST_CASE("a misspelled key names the closest known key") {
  const std::string message = error_of("training:\n  micro_bach_size: 4\n");
  CHECK(contains(message, "training.micro_bach_size"));
  CHECK(contains(message, "did you mean 'training.micro_batch_size'"));
  CHECK(contains(message, "test.yaml"));
  // A key in the wrong section finds its home.
  CHECK(contains(error_of("training:\n  seq_len: 4\n"), "did you mean 'data.seq_len'"));
  // --set is checked the same way.
  CHECK(contains(error_of("", {"trainig.steps=3"}), "did you mean 'training.steps'"));
  // Unknown sections too.
  CHECK(contains(error_of("trainng:\n  steps: 3\n"), "did you mean 'training'"));
}

TEST_CASE("type and range errors name the key, the value and what is allowed") {
  std::string message = error_of("training:\n  steps: abc\n");
  CHECK(contains(message, "training.steps"));
  CHECK(contains(message, "'abc'"));
  CHECK(contains(message, "an integer >= 1"));
  CHECK(contains(message, "test.yaml:2"));

  message = error_of("training:\n  micro_batch_size: 0\n");
  CHECK(contains(message, "training.micro_batch_size"));
  CHECK(contains(message, "'0'"));

  message = error_of("", {"training.device=tpu"});
  CHECK(contains(message, "training.device"));
  CHECK(contains(message, "one of: auto, cpu, cuda"));

  CHECK(contains(error_of("training:\n  lr: -1\n"), "training.lr"));
  CHECK(contains(error_of("kernels:\n  rope: maybe\n"), "true or false"));
  CHECK(contains(error_of("training:\n  steps: 1.5\n"), "training.steps"));
  CHECK(contains(error_of("data:\n  train: {a: 1}\n"), "a list of strings"));
  CHECK(contains(error_of("", {"training.steps"}), "expected section.key=value"));
  CHECK(contains(error_of("training: [1, 2]\n"), "section 'training' must be a mapping"));
  CHECK(contains(error_of("model:\n  preset: [unclosed\n"), "not valid YAML"));
}

TEST_CASE("cross entropy and fused linear cross entropy cannot both be on") {
  const std::string message =
      error_of("kernels:\n  cross_entropy: true\n  fused_linear_cross_entropy: true\n");
  CHECK(contains(message, "kernels.cross_entropy"));
  CHECK(contains(message, "kernels.fused_linear_cross_entropy"));
  CHECK(error_of("kernels:\n  cross_entropy: true\n  fused_linear_cross_entropy: false\n").empty());
}

TEST_CASE("pipeline parallelism is rejected, with the fused loss named") {
  std::string message = error_of("parallelism:\n  pipeline_parallel_degree: 2\n");
  CHECK(contains(message, "parallelism.pipeline_parallel_degree"));
  CHECK(contains(message, "not supported"));
  CHECK(contains(message, "incompatible with kernels.fused_linear_cross_entropy"));
  message = error_of(
      "parallelism:\n  pipeline_parallel_degree: 2\nkernels:\n  fused_linear_cross_entropy: "
      "false\n");
  CHECK(contains(message, "not supported"));
  CHECK_FALSE(contains(message, "incompatible"));
  CHECK(contains(error_of("", {"parallelism.tensor_parallel_degree=2"}), "tensor_parallel_degree"));
}

TEST_CASE("configs/reference.yaml is exactly what the schema generates") {
  std::ifstream file(source_dir() + "/configs/reference.yaml");
  REQUIRE(file.good());
  std::stringstream text;
  text << file.rdbuf();
  CHECK(text.str() == liger::config::reference_yaml());
  // And it is itself a valid config equal to the defaults.
  const auto c = parse_config(text.str(), "reference.yaml");
  CHECK(c.resolved_yaml == parse_config("", "empty.yaml").resolved_yaml);
}

TEST_CASE("every shipped config is valid") {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(source_dir() + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path().string());
    CHECK_NOTHROW(liger::config::load_config(entry.path().string()));
    ++checked;
  }
  CHECK(checked >= 5);
  CHECK(contains(
      [] {
        try {
          liger::config::load_config("/nonexistent/x.yaml");
        } catch (const ConfigError& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      "/nonexistent/x.yaml"));
}

TEST_CASE("every schema key has a documented, valid default") {
  for (const auto& key : liger::config::schema()) {
    INFO(key.full_name());
    CHECK_FALSE(key.doc.empty());
    CHECK(liger::config::find_key(key.full_name()) == &key);
  }
}

TEST_CASE("training.cuda_graphs on the CPU is a config error naming the key") {
  const std::string message = error_of("training:\n  device: cpu\n  cuda_graphs: true\n");
  CHECK(contains(message, "training.cuda_graphs"));
  CHECK(contains(message, "training.device"));
  CHECK(error_of("training:\n  device: cuda\n  cuda_graphs: true\n").empty());
}

TEST_CASE("every key's YAML default parses to its field's default in TrainConfig") {
  liger::config::TrainConfig parsed = parse_config("", "empty.yaml");
  const liger::config::TrainConfig code;
  // data.tokenizer '' resolves to the sample without model.hf_path (tested below).
  CHECK(parsed.data.tokenizer == liger::config::kSampleTokenizer);
  parsed.data.tokenizer = "";
#define CONFIG_SECTION(section, Struct)     \
  {                                         \
    const char* section_name = #section;    \
    const auto& from_yaml = parsed.section; \
    const auto& from_code = code.section;
#define CONFIG_KEY(Type, name, default_value, allowed, doc) \
  {                                                         \
    INFO(section_name << "." #name);                        \
    CHECK(from_yaml.name == from_code.name);                \
  }
#define CONFIG_END_SECTION() }
#include "trainer/config_keys.h"
#undef CONFIG_SECTION
#undef CONFIG_KEY
#undef CONFIG_END_SECTION
}

TEST_CASE(
    "data.tokenizer '' is model.hf_path's folder, else the sample; the resolved YAML names it") {
  const auto from_folder = parse_config("model:\n  hf_path: /models/Llama-3-8B\n", "a.yaml");
  CHECK(from_folder.data.tokenizer == "/models/Llama-3-8B");
  CHECK(contains(from_folder.resolved_yaml, "tokenizer: /models/Llama-3-8B"));
  CHECK(parse_config("", "a.yaml", {"model.hf_path=/m", "data.tokenizer=''"}).data.tokenizer ==
        "/m");
  CHECK(parse_config("", "a.yaml", {"data.tokenizer=''"}).data.tokenizer ==
        liger::config::kSampleTokenizer);
  // A tokenizer given stays, with or without model.hf_path.
  CHECK(parse_config("", "a.yaml", {"model.hf_path=/m", "data.tokenizer=/t/tokenizer.json"})
            .data.tokenizer == "/t/tokenizer.json");
  // Read back from a checkpoint's resolved YAML, it is the same.
  CHECK(parse_config(from_folder.resolved_yaml, "config.yaml").data.tokenizer ==
        "/models/Llama-3-8B");
}

TEST_CASE("modes are enums named as in YAML; checkpoint.resume is none, auto or a path") {
  using namespace liger::config;
  const auto c = parse_config(
      "training:\n  precision: bf16-mixed\n  activation_checkpointing: glu\n", "modes.yaml",
      {"kernels.flce_mode=lean", "parallelism.backend=gloo", "logging.progress_bar=off",
       "training.lr_schedule=linear", "checkpoint.resume=auto", "kernels.plain_attention=liger"});
  CHECK(c.training.precision == Precision::bf16_mixed);
  CHECK(c.model.dtype == Dtype::bf16);  // set by the precision
  CHECK(c.training.activation_checkpointing == ActivationCheckpointing::glu);
  CHECK(c.kernels.flce_mode == FlceMode::lean);
  CHECK(c.kernels.plain_attention == PlainAttention::liger);
  CHECK(parse_config("", "default.yaml").kernels.plain_attention == PlainAttention::measured);
  CHECK(c.parallelism.backend == Backend::gloo);
  CHECK(c.logging.progress_bar == ProgressBar::off);
  CHECK(c.training.lr_schedule == LrScheduleKind::linear);
  CHECK(c.checkpoint.resume.mode == ResumeMode::auto_);
  CHECK(std::string(name_of(Precision::bf16_mixed)) == "bf16-mixed");
  std::ostringstream printed;
  printed << c.training.precision << " " << c.checkpoint.resume;
  CHECK(printed.str() == "bf16-mixed auto");
  // The resolved YAML keeps the names as written.
  CHECK(contains(c.resolved_yaml, "precision: bf16-mixed"));
  CHECK(contains(c.resolved_yaml, "resume: auto"));

  const auto path = parse_config("", "p.yaml", {"checkpoint.resume=runs/x/step-4"});
  CHECK(path.checkpoint.resume.mode == ResumeMode::path);
  CHECK(path.checkpoint.resume.path == "runs/x/step-4");
  CHECK(parse_config("", "p.yaml", {"checkpoint.resume=''"}).checkpoint.resume.mode ==
        ResumeMode::none);
  CHECK(contains(error_of("", {"logging.level=loud"}), "one of: debug, info, warn, error"));
}

TEST_CASE("model.dtype and training.precision also accept HF's dtype names") {
  using namespace liger::config;
  CHECK(parse_config("", "hf.yaml", {"model.dtype=bfloat16"}).model.dtype == Dtype::bf16);
  CHECK(parse_config("", "hf.yaml", {"model.dtype=float16"}).model.dtype == Dtype::fp16);
  CHECK(parse_config("", "hf.yaml", {"model.dtype=float32"}).model.dtype == Dtype::fp32);
  const auto pure = parse_config("", "hf.yaml", {"training.precision=bfloat16"});
  CHECK(pure.training.precision == Precision::bf16);
  CHECK(pure.model.dtype == Dtype::bf16);
  CHECK(parse_config("", "hf.yaml", {"training.precision=float32"}).training.precision ==
        Precision::fp32);
  // Logs and messages keep the house names; the accepted spellings list both.
  CHECK(std::string(name_of(Dtype::bf16)) == "bf16");
  CHECK(enum_input_names<Dtype>() ==
        std::vector<std::string>{"fp32", "bf16", "fp16", "float32", "bfloat16", "float16"});
  // There is no fp16 training mode: float16 is not a precision, and the message says what is.
  const std::string message = error_of("", {"training.precision=float16"});
  CHECK(contains(message, "training.precision"));
  CHECK(contains(message, "one of: auto, bf16-mixed, bf16, fp32"));
  CHECK(contains(error_of("", {"model.dtype=half"}), "one of: fp32, bf16, fp16"));
}

TEST_CASE("check_for_run: CUDA graphs need one GPU, the shard degree is -1 or the world size") {
  using liger::config::check_for_run;
  auto run_error = [](const std::vector<std::string>& overrides, int64_t world_size, bool on_cuda) {
    const auto c = parse_config("", "run.yaml", overrides);
    try {
      check_for_run(c, {world_size, on_cuda});
    } catch (const ConfigError& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  CHECK(run_error({"training.cuda_graphs=true"}, 1, true).empty());
  CHECK(run_error({}, 8, false).empty());
  std::string message = run_error({"training.cuda_graphs=true"}, 1, false);
  CHECK(contains(message, "training.cuda_graphs = true but training runs on cpu"));
  CHECK(contains(message, "set training.cuda_graphs: false"));
  message = run_error({"training.cuda_graphs=true"}, 2, true);
  CHECK(contains(message, "training.cuda_graphs = true with 2 ranks"));
  message = run_error({"parallelism.data_parallel_shard_degree=4"}, 2, true);
  CHECK(contains(message, "parallelism.data_parallel_shard_degree = 4 but the job has 2 ranks"));
  CHECK(contains(message, "set it to -1 or 2"));
  CHECK(run_error({"parallelism.data_parallel_shard_degree=2"}, 2, true).empty());
  CHECK(run_error({"parallelism.data_parallel_shard_degree=4"}, 1, false)
            .empty());  // one process: not sharded
}

TEST_CASE(
    "training.memory_plan: auto chooses the precision and checkpointing: setting them beside it is "
    "an error") {
  using namespace liger::config;
  const auto c =
      parse_config("training:\n  memory_plan: auto\n  memory_budget_gib: 70\n", "plan.yaml");
  CHECK(c.training.memory_plan == MemoryPlanMode::auto_);
  CHECK(c.training.memory_budget_gib == 70.0);
  CHECK(c.training.precision == Precision::auto_);  // left to the plan, which runs with the job
  CHECK(parse_config("", "default.yaml").training.memory_plan == MemoryPlanMode::off);

  for (const std::string key : {"training.precision=bf16", "training.activation_checkpointing=none",
                                "model.dtype=bf16", "training.master_weights=true"}) {
    const std::string message = error_of("training:\n  memory_plan: auto\n", {key});
    const std::string name = key.substr(0, key.find('='));
    CHECK(
        contains(message, "--set: " + name + " = '" + key.substr(key.find('=') + 1) + "' is set"));
    CHECK(contains(message, "training.memory_plan = auto (test.yaml:2) chooses it"));
    CHECK(contains(message, "remove " + name + ", or set training.memory_plan: off"));
  }
  // Without the plan the budget would be ignored.
  const std::string message = error_of("training:\n  memory_budget_gib: 70\n");
  CHECK(contains(
      message,
      "test.yaml:2: training.memory_budget_gib = 70 is read only by training.memory_plan: auto"));
  CHECK(contains(message, "set training.memory_plan: auto or remove training.memory_budget_gib"));
  CHECK(error_of("training:\n  memory_plan: off\n  precision: bf16\n  memory_budget_gib: 0\n")
            .empty());
}

TEST_CASE(
    "with_planned_memory: the config as if the plan's precision and checkpointing were written") {
  using namespace liger::config;
  const auto c = parse_config(
      "training:\n  memory_plan: auto\n  memory_budget_gib: 70\n  steps: 9\n", "plan.yaml");
  const auto planned = with_planned_memory(c, Precision::bf16, ActivationCheckpointing::full);
  CHECK(planned.training.memory_plan == MemoryPlanMode::off);
  CHECK(planned.training.memory_budget_gib == 0.0);
  CHECK(planned.training.precision == Precision::bf16);
  CHECK(planned.training.activation_checkpointing == ActivationCheckpointing::full);
  CHECK(planned.model.dtype == Dtype::bf16);
  CHECK_FALSE(planned.training.master_weights);
  CHECK(planned.training.steps == 9);
  // The resolved YAML (what checkpoints record) reads back as the same config.
  const auto again = parse_config(planned.resolved_yaml, "resolved.yaml");
  CHECK(again.training.memory_plan == MemoryPlanMode::off);
  CHECK(again.training.precision == Precision::bf16);
  CHECK(again.training.activation_checkpointing == ActivationCheckpointing::full);
  CHECK(again.model.dtype == Dtype::bf16);
  CHECK_FALSE(again.training.master_weights);
  CHECK(again.training.steps == 9);

  const auto mixed = with_planned_memory(c, Precision::bf16_mixed, ActivationCheckpointing::none);
  CHECK(mixed.model.dtype == Dtype::bf16);
  CHECK(mixed.training.master_weights);
  CHECK(parse_config(mixed.resolved_yaml, "resolved.yaml").training.precision ==
        Precision::bf16_mixed);
  // A config built in code (no resolved YAML) keeps its fields.
  TrainConfig coded;
  coded.training.steps = 3;
  const auto coded_planned =
      with_planned_memory(coded, Precision::bf16, ActivationCheckpointing::glu);
  CHECK(coded_planned.training.steps == 3);
  CHECK(coded_planned.training.activation_checkpointing == ActivationCheckpointing::glu);
  CHECK(coded_planned.resolved_yaml.empty());
}

TEST_CASE("preference objectives: the keys parse and the rules name the keys and the fix") {
  const auto c = parse_config(
      "training:\n  objective: dpo\npreference:\n  beta: 0.2\n  loss_type: ipo\n"
      "  reference: precomputed\n  nll_weight: 0.5\n",
      "a.yaml");
  CHECK(c.training.objective == liger::config::Objective::dpo);
  CHECK(c.preference.beta == 0.2);
  CHECK(c.preference.loss_type == liger::config::DpoLoss::ipo);
  CHECK(c.preference.reference == liger::config::ReferenceSource::precomputed);
  CHECK(c.preference.nll_weight == 0.5);
  CHECK(parse_config("", "a.yaml").training.objective == liger::config::Objective::sft);

  std::string message = error_of("training:\n  objective: simpo\npreference:\n  beta: 0\n");
  INFO(message);
  CHECK(contains(message, "test.yaml"));
  CHECK(contains(message, "preference.beta = 0 with training.objective = simpo"));
  message = error_of(
      "training:\n  objective: dpo\npreference:\n  loss_type: hinge\n  label_smoothing: 0.1\n");
  CHECK(contains(message, "preference.label_smoothing"));
  CHECK(contains(message, "preference.loss_type = hinge"));
  CHECK(error_of("training:\n  objective: orpo\n  cuda_graphs: true\n")
            .find("set training.cuda_graphs: false") != std::string::npos);
  CHECK(contains(error_of("training:\n  objective: dpo\n  eval_every: 5\n"
                          "data:\n  eval_fraction: 0.1\n"),
                 "training.eval_every = 5 with training.objective = dpo"));
  CHECK(contains(error_of("training:\n  objective: dpo\nmodel:\n  adapter: lora\n"
                          "lora:\n  modules_to_save: [lm_head]\n"),
                 "set preference.reference: precomputed"));
  CHECK(error_of("training:\n  objective: dpo\nmodel:\n  adapter: lora\n").empty());
  CHECK(contains(error_of("training:\n  objective: kto\n"), "training.objective"));
}
