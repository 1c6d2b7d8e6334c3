#include "trainer/config.h"

#include "trainer/config_schema.h"

#include <yaml-cpp/yaml.h>

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

  std::optional<int64_t> optional_integer(const std::string& name) const {
    const KeySpec& key = spec(name);
    YAML::Node value = node(key);
    if (value.IsNull() && key.nullable) return std::nullopt;
    int64_t parsed = 0;
    if (!value.IsScalar() || !YAML::convert<int64_t>::decode(value, parsed)) fail(key, value);
    if (parsed < key.min || parsed > key.max) fail(key, value);
    return parsed;
  }
  int64_t integer(const std::string& name) const { return *optional_integer(name); }

  std::optional<double> optional_number(const std::string& name) const {
    const KeySpec& key = spec(name);
    YAML::Node value = node(key);
    if (value.IsNull() && key.nullable) return std::nullopt;
    double parsed = 0.0;
    if (!value.IsScalar() || !YAML::convert<double>::decode(value, parsed) || !std::isfinite(parsed))
      fail(key, value);
    if (parsed < key.min || parsed > key.max) fail(key, value);
    return parsed;
  }
  double number(const std::string& name) const { return *optional_number(name); }

  std::optional<bool> optional_boolean(const std::string& name) const {
    const KeySpec& key = spec(name);
    YAML::Node value = node(key);
    if (value.IsNull() && key.nullable) return std::nullopt;
    bool parsed = false;
    if (!value.IsScalar() || !YAML::convert<bool>::decode(value, parsed)) fail(key, value);
    return parsed;
  }
  bool boolean(const std::string& name) const { return *optional_boolean(name); }

  std::string string(const std::string& name) const {
    const KeySpec& key = spec(name);
    YAML::Node value = node(key);
    if (!value.IsScalar()) fail(key, value);
    if (key.type == KeyType::choice) {
      for (const auto& allowed : key.choices) {
        if (value.Scalar() == allowed) return allowed;
      }
      fail(key, value);
    }
    return value.Scalar();
  }

  std::vector<std::string> string_list(const std::string& name) const {
    const KeySpec& key = spec(name);
    YAML::Node value = node(key);
    std::vector<std::string> items;
    if (value.IsScalar()) {
      items.push_back(value.Scalar());
    } else if (value.IsSequence()) {
      for (const auto& item : value) {
        if (!item.IsScalar()) fail(key, value);
        items.push_back(item.Scalar());
      }
    } else {
      fail(key, value);
    }
    return items;
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
                    closest_key(full_name) +
                    "'? (every key is listed in configs/reference.yaml)");
}

void read_file_values(const YAML::Node& root, const std::string& origin, Values& values) {
  if (!root || root.IsNull()) return;  // an empty file: all defaults
  if (!root.IsMap()) {
    throw ConfigError(origin + ": the top level must be a mapping of sections (model:, data:, "
                               "training:, ...), got " +
                      scalar_text(root));
  }
  for (const auto& section_entry : root) {
    const std::string section = section_entry.first.as<std::string>();
    bool known_section = false;
    for (const auto& name : sections()) known_section |= (name == section);
    if (!known_section) {
      std::string sections_list;
      for (const auto& name : sections()) sections_list += (sections_list.empty() ? "" : ", ") + name;
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
      throw ConfigError("--set " + text + ": expected section.key=value (e.g. --set training.steps=100)");
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

TrainConfig build_config(const Values& v) {
  TrainConfig c;
  auto& m = c.model;
  m.preset = v.string("model.preset");
  m.hf_path = v.string("model.hf_path");
  m.dtype = v.string("model.dtype");
  m.vocab_size = v.optional_integer("model.vocab_size");
  m.hidden_size = v.optional_integer("model.hidden_size");
  m.intermediate_size = v.optional_integer("model.intermediate_size");
  m.num_layers = v.optional_integer("model.num_layers");
  m.num_heads = v.optional_integer("model.num_heads");
  m.num_kv_heads = v.optional_integer("model.num_kv_heads");
  m.head_dim = v.optional_integer("model.head_dim");
  m.rope_theta = v.optional_number("model.rope_theta");
  m.rms_norm_eps = v.optional_number("model.rms_norm_eps");
  m.tie_embeddings = v.optional_boolean("model.tie_embeddings");
  m.max_seq_len = v.optional_integer("model.max_seq_len");
  m.sliding_window = v.optional_integer("model.sliding_window");
  m.attn_softcap = v.optional_number("model.attn_softcap");
  m.final_softcap = v.optional_number("model.final_softcap");
  m.query_pre_attn_scalar = v.optional_number("model.query_pre_attn_scalar");
  m.init_std = v.number("model.init_std");
  // Adapters (LoRA): the names are checked against the model in trainer/adapter_setup.cpp.
  m.adapter = v.string("model.adapter");
  m.adapter_path = v.string("model.adapter_path");
  c.lora.rank = v.integer("lora.rank");
  c.lora.alpha = v.optional_number("lora.alpha");
  c.lora.dropout = v.number("lora.dropout");
  c.lora.target_modules = v.string_list("lora.target_modules");
  c.lora.modules_to_save = v.string_list("lora.modules_to_save");
  if (m.adapter == "none" && !m.adapter_path.empty()) {
    throw ConfigError(v.where("model.adapter_path") + ": model.adapter_path = '" + m.adapter_path +
                      "' but model.adapter = none; set model.adapter: lora to load the adapter");
  }

  auto& d = c.data;
  d.train = v.string_list("data.train");
  d.format = v.string("data.format");
  d.tokenizer = v.string("data.tokenizer");
  d.seq_len = v.integer("data.seq_len");
  d.add_bos = v.boolean("data.add_bos");
  d.add_eos = v.boolean("data.add_eos");
  d.chat_template = v.string("data.chat_template");
  d.token_dtype = v.string("data.token_dtype");
  d.packing = v.string("data.packing");
  d.bos_token = v.string("data.bos_token");
  d.eos_token = v.string("data.eos_token");
  d.eval = v.string_list("data.eval");
  d.eval_fraction = v.number("data.eval_fraction");

  auto& t = c.training;
  t.device = v.string("training.device");
  t.steps = v.integer("training.steps");
  t.micro_batch_size = v.integer("training.micro_batch_size");
  t.gradient_accumulation_steps = v.integer("training.gradient_accumulation_steps");
  t.lr = v.number("training.lr");
  t.lr_schedule = v.string("training.lr_schedule");
  t.warmup_steps = v.integer("training.warmup_steps");
  t.min_lr_ratio = v.number("training.min_lr_ratio");
  t.weight_decay = v.number("training.weight_decay");
  t.beta1 = v.number("training.beta1");
  t.beta2 = v.number("training.beta2");
  t.eps = v.number("training.eps");
  t.grad_clip = v.number("training.grad_clip");
  t.seed = v.integer("training.seed");
  t.master_weights = v.boolean("training.master_weights");
  t.precision = v.string("training.precision");
  t.stochastic_rounding = v.boolean("training.stochastic_rounding");
  t.threads = v.integer("training.threads");
  t.eval_every = v.integer("training.eval_every");
  t.eval_batches = v.integer("training.eval_batches");
  t.activation_checkpointing = v.string("training.activation_checkpointing");
  t.cuda_graphs = v.boolean("training.cuda_graphs");

  auto& k = c.kernels;
  k.rms_norm = v.boolean("kernels.rms_norm");
  k.layer_norm = v.boolean("kernels.layer_norm");
  k.rope = v.boolean("kernels.rope");
  k.swiglu = v.boolean("kernels.swiglu");
  k.geglu = v.boolean("kernels.geglu");
  k.cross_entropy = v.boolean("kernels.cross_entropy");
  k.fused_linear_cross_entropy = v.boolean("kernels.fused_linear_cross_entropy");
  k.tuned_gemm = v.boolean("kernels.tuned_gemm");
  k.strict = v.boolean("kernels.strict");
  k.flce_chunk_mb = v.number("kernels.flce_chunk_mb");
  k.flce_mode = v.string("kernels.flce_mode");

  c.parallelism.pipeline_parallel_degree = v.integer("parallelism.pipeline_parallel_degree");
  c.parallelism.tensor_parallel_degree = v.integer("parallelism.tensor_parallel_degree");
  c.parallelism.context_parallel_degree = v.integer("parallelism.context_parallel_degree");
  c.parallelism.data_parallel_shard_degree = v.integer("parallelism.data_parallel_shard_degree");
  c.parallelism.reshard_after_forward = v.boolean("parallelism.reshard_after_forward");
  c.parallelism.reduce_dtype = v.string("parallelism.reduce_dtype");
  c.parallelism.backend = v.string("parallelism.backend");
  c.parallelism.timeout_s = v.number("parallelism.timeout_s");

  auto& ck = c.checkpoint;
  ck.output_dir = v.string("checkpoint.output_dir");
  ck.every = v.integer("checkpoint.every");
  ck.keep_last = v.integer("checkpoint.keep_last");
  ck.resume = v.string("checkpoint.resume");
  ck.save_final = v.boolean("checkpoint.save_final");

  auto& l = c.logging;
  l.every = v.integer("logging.every");
  l.peak_tflops = v.number("logging.peak_tflops");
  l.profile_steps = v.integer("logging.profile_steps");
  l.profile_first_step = v.integer("logging.profile_first_step");
  l.level = v.string("logging.level");
  l.progress_bar = v.string("logging.progress_bar");
  l.sample_prompt = v.string("logging.sample_prompt");
  l.sample_tokens = v.integer("logging.sample_tokens");
  l.sample_temperature = v.number("logging.sample_temperature");
  l.sample_top_p = v.number("logging.sample_top_p");
  return c;
}

// Rules that involve more than one key.
void check_cross_key_rules(const TrainConfig& c, const Values& v) {
  if (c.kernels.cross_entropy && c.kernels.fused_linear_cross_entropy) {
    throw ConfigError(v.where("kernels.cross_entropy") + ": kernels.cross_entropy and kernels.fused_linear_cross_entropy are both true; they compute the same loss, turn one off (fused_linear_cross_entropy saves the logits memory)");
  }
  if (c.parallelism.pipeline_parallel_degree != 1 || c.parallelism.tensor_parallel_degree != 1) {
    throw std::logic_error("range check let an unsupported parallel degree through");
  }
  if (c.data.train.empty()) {
    throw ConfigError(v.where("data.train") + ": data.train is an empty list; give at least one training file");
  }
  if (c.data.tokenizer.empty()) {
    throw ConfigError(v.where("data.tokenizer") +
                      ": data.tokenizer is empty; give a SentencePiece .model file or a Hugging Face tokenizer.json");
  }
  if (!c.data.eval.empty() && c.data.eval_fraction > 0.0) {
    throw ConfigError(v.where("data.eval_fraction") + ": data.eval and data.eval_fraction = " +
                      std::to_string(c.data.eval_fraction) +
                      " are both set; evaluate on the data.eval files or on held-out training windows, "
                      "not both: remove one");
  }
  if (c.training.eval_every > 0 && c.data.eval.empty() && c.data.eval_fraction == 0.0) {
    throw ConfigError(v.where("training.eval_every") + ": training.eval_every = " +
                      std::to_string(c.training.eval_every) +
                      " but there is no evaluation data; set data.eval (files) or data.eval_fraction "
                      "(e.g. 0.05), or set training.eval_every: 0");
  }
  if (c.checkpoint.output_dir.empty()) {
    throw ConfigError(v.where("checkpoint.output_dir") + ": checkpoint.output_dir is empty; give a directory");
  }
  if (c.training.cuda_graphs && c.training.device == "cpu") {
    throw ConfigError(v.where("training.cuda_graphs") +
                      ": training.cuda_graphs = true needs training.device cuda (it is cpu); set "
                      "training.cuda_graphs: false or train on a GPU");
  }
  if (c.training.warmup_steps > c.training.steps && c.training.lr_schedule != "constant") {
    // Allowed, but the decay never starts; not an error.
  }
}

// training.precision (not auto) decides model.dtype and training.master_weights.
// Either of them set (in the file or by --set) to something else is an error
// naming both keys; else they take the precision's values, so that the
// resolved YAML says what runs and reads back the same.
void resolve_precision(Values& v) {
  const std::string precision = v.string("training.precision");
  if (precision == "auto") return;
  const bool master = precision != "bf16";  // bf16-mixed, fp32: fp32 parameters and state
  const std::string dtype = precision == "fp32" ? "fp32" : "bf16";
  const std::string where = v.where("training.precision");
  const std::string set_dtype = v.string("model.dtype");  // validates the value first
  if (v.where("model.dtype") != "default" && set_dtype != dtype) {
    throw ConfigError(where + ": training.precision = " + precision + " computes in " + dtype +
                      " but model.dtype = " + set_dtype + " (" + v.where("model.dtype") +
                      "); remove model.dtype (training.precision sets it) or set it to " + dtype);
  }
  // fp32 compute keeps fp32 parameters whatever master_weights says: no contradiction.
  if (precision != "fp32" && v.where("training.master_weights") != "default") {
    const bool set_master = v.boolean("training.master_weights");
    if (set_master != master) {
      throw ConfigError(
          where + ": training.precision = " + precision +
          (master ? " keeps fp32 master weights" : " keeps bf16 parameters and optimizer state") +
          " but training.master_weights = " + (set_master ? "true" : "false") + " (" +
          v.where("training.master_weights") +
          "); remove training.master_weights (training.precision sets it) or set it to " +
          (master ? "true" : "false"));
    }
  }
  v.set("model.dtype", YAML::Node(dtype), where);
  if (precision != "fp32") v.set("training.master_weights", YAML::Node(master), where);
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
  for (const char* key : {"parallelism.tensor_parallel_degree", "parallelism.context_parallel_degree"}) {
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
  resolve_precision(values);
  check_unsupported_parallelism(values);
  TrainConfig config = build_config(values);
  check_cross_key_rules(config, values);
  config.resolved_yaml = emit_resolved(values);
  return config;
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
