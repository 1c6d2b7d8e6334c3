#include "trainer/config.h"

#include "trainer/config_schema.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

namespace liger::config {
namespace {

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsNull()) return "null";
  if (node.IsSequence()) return "a list";
  return "a mapping";
}

// Every key's YAML value (from the file, then --set, else the default), with
// typed getters that validate against the schema.
class Values {
 public:
  explicit Values(std::string origin) : origin_(std::move(origin)) {}

  void set(const std::string& full_name, const YAML::Node& value, const std::string& where) {
    values_[full_name] = value;
    where_[full_name] = where;
  }

  YAML::Node node(const KeySpec& key) const {
    auto it = values_.find(key.full_name());
    if (it != values_.end()) return it->second;
    return YAML::Load(key.default_yaml);
  }

  [[noreturn]] void fail(const KeySpec& key, const YAML::Node& value) const {
    auto it = where_.find(key.full_name());
    const std::string where = it == where_.end() ? "default" : it->second;
    throw ConfigError(where + ": " + key.full_name() + " = " + scalar_text(value) +
                      " is invalid: expected " + key.describe_allowed() + " (" + key.doc + ")");
  }

  // Reads key `full_name` into `out`, validated against the key's spec.
  // Types: those of trainer/config_keys.h.
  void read(const std::string& full_name, int64_t& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    if (!value.IsScalar() || !YAML::convert<int64_t>::decode(value, out)) fail(key, value);
    if (out < key.min || out > key.max) fail(key, value);
  }

  void read(const std::string& full_name, double& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    if (!value.IsScalar() || !YAML::convert<double>::decode(value, out) || !std::isfinite(out))
      fail(key, value);
    if (out < key.min || out > key.max) fail(key, value);
  }

  void read(const std::string& full_name, bool& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    if (!value.IsScalar() || !YAML::convert<bool>::decode(value, out)) fail(key, value);
  }

  // Free text, or one of the key's choices.
  void read(const std::string& full_name, std::string& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    if (!value.IsScalar()) fail(key, value);
    out = value.Scalar();
    if (key.type == KeyType::choice &&
        std::find(key.choices.begin(), key.choices.end(), out) == key.choices.end()) {
      fail(key, value);
    }
  }

  void read(const std::string& full_name, Strings& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    out.clear();
    if (value.IsScalar()) {
      out.push_back(value.Scalar());
    } else if (value.IsSequence()) {
      for (const auto& item : value) {
        if (!item.IsScalar()) fail(key, value);
        out.push_back(item.Scalar());
      }
    } else {
      fail(key, value);
    }
  }

  // A mode, by one of the names of its enum (trainer/config_enums.h).
  template <typename Enum, typename = std::enable_if_t<has_enum_names<Enum>::value>>
  void read(const std::string& full_name, Enum& out) const {
    const KeySpec& key = spec(full_name);
    YAML::Node value = node(key);
    if (!value.IsScalar()) fail(key, value);
    const std::optional<Enum> parsed = enum_from_name<Enum>(value.Scalar());
    if (!parsed) fail(key, value);
    out = *parsed;
  }

  void read(const std::string& full_name, Resume& out) const {
    std::string text;
    read(full_name, text);
    out = Resume::from_text(text);
  }

  // null = nullopt (the preset's value).
  template <typename T>
  void read(const std::string& full_name, std::optional<T>& out) const {
    if (node(spec(full_name)).IsNull()) {
      out.reset();
      return;
    }
    T value{};
    read(full_name, value);
    out = value;
  }

  template <typename T>
  T get(const std::string& full_name) const {
    T value{};
    read(full_name, value);
    return value;
  }

  std::string where(const std::string& full_name) const {
    auto it = where_.find(full_name);
    return it == where_.end() ? "default" : it->second;
  }

 private:
  static const KeySpec& spec(const std::string& name) {
    const KeySpec* key = find_key(name);
    if (key == nullptr) throw std::logic_error("config key missing from the schema: " + name);
    return *key;
  }

  std::string origin_;
  std::map<std::string, YAML::Node> values_;
  std::map<std::string, std::string> where_;
};

[[noreturn]] void unknown_key(const std::string& where, const std::string& full_name) {
  throw ConfigError(where + ": unknown key '" + full_name + "'; did you mean '" +
                    closest_key(full_name) + "'? (every key is listed in configs/reference.yaml)");
}

void read_file_values(const YAML::Node& root, const std::string& origin, Values& values) {
  if (!root || root.IsNull()) return;  // an empty file: all defaults
  if (!root.IsMap()) {
    throw ConfigError(origin +
                      ": the top level must be a mapping of sections (model:, data:, "
                      "training:, ...), got " +
                      scalar_text(root));
  }
  for (const auto& section_entry : root) {
    const std::string section = section_entry.first.as<std::string>();
    bool known_section = false;
    for (const auto& name : sections()) known_section |= (name == section);
    if (!known_section) {
      std::string sections_list;
      for (const auto& name : sections())
        sections_list += (sections_list.empty() ? "" : ", ") + name;
      throw ConfigError(origin + ": unknown section '" + section + "' (sections: " + sections_list +
                        "); did you mean '" + closest_name(section, sections()) + "'?");
    }
    const YAML::Node& body = section_entry.second;
    if (body.IsNull()) continue;
    if (!body.IsMap()) {
      throw ConfigError(origin + ": section '" + section + "' must be a mapping of keys, got " +
                        scalar_text(body));
    }
    for (const auto& entry : body) {
      const std::string full_name = section + "." + entry.first.as<std::string>();
      if (find_key(full_name) == nullptr) unknown_key(origin, full_name);
      const int line = entry.first.Mark().line + 1;
      values.set(full_name, entry.second, origin + ":" + std::to_string(line));
    }
  }
}

void read_overrides(const std::vector<std::string>& overrides, Values& values) {
  for (const auto& text : overrides) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ConfigError("--set " + text +
                        ": expected section.key=value (e.g. --set training.steps=100)");
    }
    const std::string full_name = text.substr(0, eq);
    if (find_key(full_name) == nullptr) unknown_key("--set", full_name);
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(eq + 1));
    } catch (const YAML::Exception& error) {
      throw ConfigError("--set " + text + ": the value is not valid YAML (" + error.msg + ")");
    }
    values.set(full_name, value, "--set");
  }
}

// Every key of trainer/config_keys.h into its field.
TrainConfig build_config(const Values& v) {
  TrainConfig c;
#define CONFIG_SECTION(section, Struct) \
  {                                     \
    Struct& fields = c.section;         \
    const std::string prefix = #section ".";
#define CONFIG_KEY(Type, name, default_value, allowed, doc) v.read(prefix + #name, fields.name);
#define CONFIG_END_SECTION() }
#include "trainer/config_keys.h"
#undef CONFIG_SECTION
#undef CONFIG_KEY
#undef CONFIG_END_SECTION
  return c;
}

// Rules that involve more than one key.
// The preference objectives' rules: a positive beta where the loss divides
// by it or scales by it, label smoothing only where it has a meaning, and
// the trainer features a preference step does not have.
void check_preference_rules(const TrainConfig& c, const Values& v) {
  const Objective objective = c.training.objective;
  if (objective == Objective::sft) return;
  const std::string name = name_of(objective);
  if ((objective == Objective::dpo || objective == Objective::simpo) && c.preference.beta <= 0.0) {
    throw ConfigError(v.where("preference.beta") +
                      ": preference.beta = 0 with training.objective = " + name +
                      "; the loss needs beta > 0 (TRL's default is 0.1)");
  }
  if (c.preference.label_smoothing > 0.0 &&
      (objective == Objective::orpo ||
       (objective == Objective::dpo && c.preference.loss_type != DpoLoss::sigmoid))) {
    throw ConfigError(v.where("preference.label_smoothing") + ": preference.label_smoothing = " +
                      std::to_string(c.preference.label_smoothing) + " has no meaning for " + name +
                      (objective == Objective::dpo ? std::string(" with preference.loss_type = ") +
                                                         name_of(c.preference.loss_type)
                                                   : std::string()) +
                      "; set it to 0 (it applies to DPO sigmoid and SimPO)");
  }
  if (objective == Objective::dpo && c.preference.reference == ReferenceSource::model &&
      c.model.adapter == Adapter::lora && !c.lora.modules_to_save.empty()) {
    throw ConfigError(v.where("lora.modules_to_save") +
                      ": lora.modules_to_save is set with preference.reference = model; the "
                      "reference switches the adapters off but would keep the trained saved "
                      "modules: set preference.reference: precomputed");
  }
  if (c.training.cuda_graphs) {
    throw ConfigError(v.where("training.cuda_graphs") +
                      ": training.cuda_graphs = true with training.objective = " + name +
                      "; the preference step is not captured, set training.cuda_graphs: false");
  }
  if (c.training.eval_every > 0) {
    throw ConfigError(v.where("training.eval_every") + ": training.eval_every = " +
                      std::to_string(c.training.eval_every) + " with training.objective = " + name +
                      "; evaluation reads token windows, set training.eval_every: 0");
  }
}

void check_cross_key_rules(const TrainConfig& c, const Values& v) {
  if (c.kernels.cross_entropy && c.kernels.fused_linear_cross_entropy) {
    throw ConfigError(
        v.where("kernels.cross_entropy") +
        ": kernels.cross_entropy and kernels.fused_linear_cross_entropy are both true; they "
        "compute the same loss, turn one off (fused_linear_cross_entropy saves the logits memory)");
  }
  check_preference_rules(c, v);
  if (c.parallelism.pipeline_parallel_degree != 1 || c.parallelism.tensor_parallel_degree != 1) {
    throw std::logic_error("range check let an unsupported parallel degree through");
  }
  if (c.data.train.empty()) {
    throw ConfigError(v.where("data.train") +
                      ": data.train is an empty list; give at least one training file");
  }
  if (!c.data.eval.empty() && c.data.eval_fraction > 0.0) {
    throw ConfigError(
        v.where("data.eval_fraction") +
        ": data.eval and data.eval_fraction = " + std::to_string(c.data.eval_fraction) +
        " are both set; evaluate on the data.eval files or on held-out training windows, "
        "not both: remove one");
  }
  if (c.training.eval_every > 0 && c.data.eval.empty() && c.data.eval_fraction == 0.0) {
    throw ConfigError(
        v.where("training.eval_every") +
        ": training.eval_every = " + std::to_string(c.training.eval_every) +
        " but there is no evaluation data; set data.eval (files) or data.eval_fraction "
        "(e.g. 0.05), or set training.eval_every: 0");
  }
  if (c.model.adapter == Adapter::none && !c.model.adapter_path.empty()) {
    throw ConfigError(v.where("model.adapter_path") + ": model.adapter_path = '" +
                      c.model.adapter_path +
                      "' but model.adapter = none; set model.adapter: lora to load the adapter");
  }
  if (c.checkpoint.output_dir.empty()) {
    throw ConfigError(v.where("checkpoint.output_dir") +
                      ": checkpoint.output_dir is empty; give a directory");
  }
  if (c.training.cuda_graphs && c.training.device == Device::cpu) {
    throw ConfigError(v.where("training.cuda_graphs") +
                      ": training.cuda_graphs = true needs training.device cuda (it is cpu); set "
                      "training.cuda_graphs: false or train on a GPU");
  }
}

// training.memory_plan: auto chooses training.precision and
// training.activation_checkpointing (and so model.dtype and
// training.master_weights) when the run starts: setting any of them beside it
// is an error naming both keys. A budget without the plan would be ignored:
// an error too.
void check_memory_plan(const Values& v) {
  const std::string where = v.where("training.memory_plan");
  if (v.get<MemoryPlanMode>("training.memory_plan") == MemoryPlanMode::off) {
    const double budget = v.get<double>("training.memory_budget_gib");
    if (budget > 0.0) {
      std::ostringstream text;
      text << v.where("training.memory_budget_gib") << ": training.memory_budget_gib = " << budget
           << " is read only by training.memory_plan: auto, and training.memory_plan is off; set "
              "training.memory_plan: auto or remove training.memory_budget_gib";
      throw ConfigError(text.str());
    }
    return;
  }
  for (const char* key : {"training.precision", "training.activation_checkpointing", "model.dtype",
                          "training.master_weights"}) {
    if (v.where(key) == "default") continue;
    throw ConfigError(v.where(key) + ": " + key + " = " + scalar_text(v.node(*find_key(key))) +
                      " is set, but training.memory_plan = auto (" + where +
                      ") chooses it; remove " + key +
                      ", or set training.memory_plan: off to choose it yourself");
  }
}

// training.precision (not auto) decides model.dtype and training.master_weights.
// Either of them set (in the file or by --set) to something else is an error
// naming both keys; else they take the precision's values, so that the
// resolved YAML says what runs and reads back the same.
void resolve_precision(Values& v) {
  const auto precision = v.get<Precision>("training.precision");
  if (precision == Precision::auto_) return;
  // bf16-mixed, fp32: fp32 parameters and state; bf16: bf16 ones.
  const bool master = precision != Precision::bf16;
  const Dtype dtype = precision == Precision::fp32 ? Dtype::fp32 : Dtype::bf16;
  const std::string where = v.where("training.precision");
  const auto set_dtype = v.get<Dtype>("model.dtype");  // validates the value first
  if (v.where("model.dtype") != "default" && set_dtype != dtype) {
    throw ConfigError(
        where + ": training.precision = " + name_of(precision) + " computes in " + name_of(dtype) +
        " but model.dtype = " + name_of(set_dtype) + " (" + v.where("model.dtype") +
        "); remove model.dtype (training.precision sets it) or set it to " + name_of(dtype));
  }
  // fp32 compute keeps fp32 parameters whatever master_weights says: no contradiction.
  if (precision != Precision::fp32 && v.where("training.master_weights") != "default") {
    const bool set_master = v.get<bool>("training.master_weights");
    if (set_master != master) {
      throw ConfigError(
          where + ": training.precision = " + name_of(precision) +
          (master ? " keeps fp32 master weights" : " keeps bf16 parameters and optimizer state") +
          " but training.master_weights = " + (set_master ? "true" : "false") + " (" +
          v.where("training.master_weights") +
          "); remove training.master_weights (training.precision sets it) or set it to " +
          (master ? "true" : "false"));
    }
  }
  v.set("model.dtype", YAML::Node(std::string(name_of(dtype))), where);
  if (precision != Precision::fp32) v.set("training.master_weights", YAML::Node(master), where);
}

// data.tokenizer '' is the tokenizer of model.hf_path's folder, or without
// one the shipped sample; the resolved YAML names the one that runs, so that
// checkpoints, liger-export and liger-generate find it.
void resolve_tokenizer(Values& v) {
  if (!v.get<std::string>("data.tokenizer").empty()) return;
  const std::string hf_path = v.get<std::string>("model.hf_path");
  if (!hf_path.empty()) {
    v.set("data.tokenizer", YAML::Node(hf_path), v.where("model.hf_path"));
  } else {
    v.set("data.tokenizer", YAML::Node(std::string(kSampleTokenizer)), v.where("data.tokenizer"));
  }
}

// pipeline_parallel_degree gets its own message before the range check.
void check_unsupported_parallelism(const Values& v) {
  const KeySpec* pp = find_key("parallelism.pipeline_parallel_degree");
  YAML::Node pp_value = v.node(*pp);
  int64_t degree = 1;
  if (pp_value.IsScalar() && YAML::convert<int64_t>::decode(pp_value, degree) && degree > 1) {
    bool fused = true;
    YAML::Node flce = v.node(*find_key("kernels.fused_linear_cross_entropy"));
    YAML::convert<bool>::decode(flce, fused);
    throw ConfigError(v.where("parallelism.pipeline_parallel_degree") +
                      ": parallelism.pipeline_parallel_degree = " + std::to_string(degree) +
                      " is not supported: liger-train shards with FSDP, set it to 1" +
                      (fused ? "; pipeline parallelism is also incompatible with "
                               "kernels.fused_linear_cross_entropy, which needs the whole lm_head "
                               "and final hidden states on one stage"
                             : ""));
  }
  for (const char* key :
       {"parallelism.tensor_parallel_degree", "parallelism.context_parallel_degree"}) {
    YAML::Node value = v.node(*find_key(key));
    if (value.IsScalar() && YAML::convert<int64_t>::decode(value, degree) && degree > 1) {
      throw ConfigError(v.where(key) + ": " + key + " = " + std::to_string(degree) +
                        " is not supported yet (liger-train shards with FSDP over data-parallel "
                        "ranks); set it to 1");
    }
  }
  {
    YAML::Node value = v.node(*find_key("parallelism.data_parallel_shard_degree"));
    if (value.IsScalar() && YAML::convert<int64_t>::decode(value, degree) && degree == 0) {
      throw ConfigError(v.where("parallelism.data_parallel_shard_degree") +
                        ": parallelism.data_parallel_shard_degree = 0; use -1 (all ranks) or the "
                        "number of ranks");
    }
  }
}

std::string emit_resolved(const Values& v) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& section : sections()) {
    out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (const auto& key : schema()) {
      if (key.section != section) continue;
      out << YAML::Key << key.name << YAML::Value << v.node(key);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

TrainConfig parse_config(const std::string& yaml_text, const std::string& origin,
                         const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& error) {
    throw ConfigError(origin + ":" + std::to_string(error.mark.line + 1) +
                      ": not valid YAML: " + error.msg);
  }
  Values values(origin);
  read_file_values(root, origin, values);
  read_overrides(overrides, values);
  check_memory_plan(values);
  resolve_precision(values);
  resolve_tokenizer(values);
  check_unsupported_parallelism(values);
  TrainConfig config = build_config(values);
  check_cross_key_rules(config, values);
  config.resolved_yaml = emit_resolved(values);
  return config;
}

void check_for_run(const TrainConfig& c, const RunSetting& run) {
  if (c.training.cuda_graphs && !run.on_cuda) {
    throw ConfigError(
        "training.cuda_graphs = true but training runs on cpu; CUDA graphs need a GPU: "
        "set training.cuda_graphs: false");
  }
  if (c.training.cuda_graphs && run.world_size > 1) {
    throw ConfigError(
        "training.cuda_graphs = true with " + std::to_string(run.world_size) +
        " ranks: the sharded step's collectives are not captured; set training.cuda_graphs: false");
  }
  if (c.training.objective != Objective::sft && run.world_size > 1) {
    throw ConfigError("training.objective = " + std::string(name_of(c.training.objective)) +
                      " with " + std::to_string(run.world_size) +
                      " ranks: preference training runs on one process for now; launch one "
                      "process or set training.objective: sft");
  }
  const int64_t degree = c.parallelism.data_parallel_shard_degree;
  if (run.world_size > 1 && degree != -1 && degree != run.world_size) {
    throw ConfigError("parallelism.data_parallel_shard_degree = " + std::to_string(degree) +
                      " but the job has " + std::to_string(run.world_size) +
                      " ranks: liger-train shards over all ranks; set it to -1 or " +
                      std::to_string(run.world_size));
  }
}

TrainConfig with_planned_memory(const TrainConfig& config, Precision precision,
                                ActivationCheckpointing checkpointing) {
  if (precision == Precision::auto_)
    throw std::logic_error("with_planned_memory: a plan names its precision");
  TrainConfig planned = config;
  planned.training.memory_plan = MemoryPlanMode::off;
  planned.training.memory_budget_gib = 0.0;
  planned.training.precision = precision;
  planned.training.activation_checkpointing = checkpointing;
  planned.model.dtype = precision == Precision::fp32 ? Dtype::fp32 : Dtype::bf16;
  // fp32 keeps fp32 parameters whatever training.master_weights says (resolve_precision).
  if (precision != Precision::fp32)
    planned.training.master_weights = precision == Precision::bf16_mixed;
  // The resolved YAML (every key, in a parsed config) read back with the plan
  // written over it: the same keys as the fields above.
  if (!config.resolved_yaml.empty()) {
    std::vector<std::string> plan = {
        "training.memory_plan=off", "training.memory_budget_gib=0",
        std::string("training.precision=") + name_of(precision),
        std::string("training.activation_checkpointing=") + name_of(checkpointing),
        std::string("model.dtype=") + name_of(planned.model.dtype)};
    if (precision != Precision::fp32) {
      plan.push_back(std::string("training.master_weights=") +
                     (planned.training.master_weights ? "true" : "false"));
    }
    planned.resolved_yaml =
        parse_config(config.resolved_yaml, "the memory plan", plan).resolved_yaml;
  }
  return planned;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream file(path);
  if (!file) {
    throw ConfigError(path + ": cannot open the config file; check the path given to --config");
  }
  std::stringstream text;
  text << file.rdbuf();
  return parse_config(text.str(), path, overrides);
}

}  // namespace liger::config
