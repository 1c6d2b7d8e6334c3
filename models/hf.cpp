#include "models/hf.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liger::models {
namespace {

struct Architecture {
  const char* hf_class;
  const char* model_type;
  ModelFamily family;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", ModelFamily::llama},
    {"MistralForCausalLM", "mistral", ModelFamily::mistral},
    {"GemmaForCausalLM", "gemma", ModelFamily::gemma},
    {"Gemma2ForCausalLM", "gemma2", ModelFamily::gemma2},
    {"Qwen2ForCausalLM", "qwen2", ModelFamily::qwen2},
    {"Qwen3ForCausalLM", "qwen3", ModelFamily::qwen3},
};

const Architecture& architecture_of_family(ModelFamily family) {
  for (const auto& a : kArchitectures) {
    if (family == a.family) return a;
  }
  throw ModelIoError("model family '" + to_string(family) +
                     "' has no Hugging Face architecture here");
}

bool is_gemma(ModelFamily family) {
  switch (family) {
    case ModelFamily::llama:
    case ModelFamily::mistral:
    case ModelFamily::qwen2:
    case ModelFamily::qwen3: return false;
    case ModelFamily::gemma:
    case ModelFamily::gemma2: return true;
  }
  return false;  // not reached: every family is a case above
}

bool is_qwen(ModelFamily family) {
  return family == ModelFamily::qwen2 || family == ModelFamily::qwen3;
}

// The HF classes' defaults for keys a config.json leaves out.
int64_t hf_default_num_kv_heads(ModelFamily family, int64_t num_heads) {
  switch (family) {
    case ModelFamily::llama: return num_heads;
    case ModelFamily::mistral: return 8;
    case ModelFamily::gemma: return 16;
    case ModelFamily::gemma2: return 4;
    case ModelFamily::qwen2:
    case ModelFamily::qwen3: return 32;
  }
  return num_heads;  // not reached
}

int64_t hf_default_max_position_embeddings(ModelFamily family) {
  switch (family) {
    case ModelFamily::llama: return 2048;
    case ModelFamily::mistral: return 131072;
    case ModelFamily::gemma:
    case ModelFamily::gemma2: return 8192;
    case ModelFamily::qwen2:
    case ModelFamily::qwen3: return 32768;
  }
  return 2048;  // not reached
}

std::string supported_list() {
  std::string out;
  for (const auto& a : kArchitectures) out += std::string(out.empty() ? "" : ", ") + a.hf_class;
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelIoError(path.string() + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string shape_text(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Typed access to config.json keys with HF's class defaults for absent ones;
// every failure names the file, the key and the value.
class Keys {
 public:
  Keys(const json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const std::string& key) const { return j_[key]; }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    const std::string value = j_.contains(key) ? j_[key].dump() : std::string("(absent)");
    throw ModelIoError(origin_ + ": " + key + " = " + value + " " + why);
  }

  int64_t integer(const std::string& key) const {
    if (!has(key)) fail(key, "is required");
    if (!j_[key].is_number_integer()) fail(key, "must be an integer");
    return j_[key].get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
  }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_number()) fail(key, "must be a number");
    return j_[key].get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) fail(key, "must be true or false");
    return j_[key].get<bool>();
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_string()) fail(key, "must be a string");
    return j_[key].get<std::string>();
  }

 private:
  const json& j_;
  std::string origin_;
};

void read_rope(const Keys& keys, const std::string& origin, ModelConfig& c) {
  // Legacy keys (rope_theta, rope_scaling) or transformers 5's rope_parameters.
  const json* params = keys.has("rope_parameters") && keys.at("rope_parameters").is_object()
                           ? &keys.at("rope_parameters")
                           : nullptr;
  c.rope_theta = keys.number("rope_theta", 10000.0);
  if (!keys.has("rope_theta") && params != nullptr && params->contains("rope_theta")) {
    c.rope_theta = (*params)["rope_theta"].get<double>();
  }
  const json* scaling = keys.has("rope_scaling") ? &keys.at("rope_scaling") : params;
  const std::string key = keys.has("rope_scaling") ? "rope_scaling" : "rope_parameters";
  c.rope_scaling = RopeScaling{};
  if (scaling == nullptr) return;
  if (!scaling->is_object()) keys.fail(key, "must be an object");
  std::string type = scaling->value("rope_type", scaling->value("type", std::string("default")));
  if (type == "default") return;
  if (type != "llama3") {
    keys.fail(key, "has rope_type '" + type +
                       "', which liger-train does not implement (supported: default, llama3); "
                       "use a checkpoint without this RoPE scaling");
  }
  auto field = [&](const char* name) {
    if (!scaling->contains(name) || !(*scaling)[name].is_number()) {
      keys.fail(key, std::string("(llama3) needs a number '") + name + "'");
    }
    return (*scaling)[name].get<double>();
  };
  c.rope_scaling.type = RopeScalingType::llama3;
  c.rope_scaling.factor = field("factor");
  c.rope_scaling.low_freq_factor = field("low_freq_factor");
  c.rope_scaling.high_freq_factor = field("high_freq_factor");
  c.rope_scaling.original_max_position_embeddings =
      static_cast<int64_t>(field("original_max_position_embeddings"));
  (void)origin;
}

// layer_types ["sliding_attention", "full_attention", ...] -> the period
// pattern of ModelConfig (layer i global iff (i + 1) % P == 0; P = 1: all
// sliding). Returns 0 when no layer slides. Irregular layouts are errors.
int64_t layer_pattern(const Keys& keys, int64_t num_layers) {
  const json& types = keys.at("layer_types");
  if (!types.is_array() || static_cast<int64_t>(types.size()) != num_layers) {
    keys.fail("layer_types", "must list one type per layer (" + std::to_string(num_layers) + ")");
  }
  std::vector<bool> global;
  for (const auto& t : types) {
    const std::string name = t.is_string() ? t.get<std::string>() : "";
    if (name != "sliding_attention" && name != "full_attention") {
      keys.fail("layer_types", "may only hold sliding_attention and full_attention");
    }
    global.push_back(name == "full_attention");
  }
  bool any_sliding = false;
  for (bool g : global) any_sliding |= !g;
  if (!any_sliding) return 0;
  for (int64_t period = 1; period <= num_layers + 1; ++period) {
    bool fits = true;
    for (int64_t i = 0; i < num_layers && fits; ++i) {
      fits = global[i] == (period > 1 && (i + 1) % period == 0);
    }
    if (fits) return period;
  }
  keys.fail("layer_types", "is not a regular pattern (every N-th layer global); not supported");
}

// layer_types of Qwen's layout (global layers, then sliding ones: HF's
// max_window_layers) -> the index of the first sliding layer; num_layers when
// none slides. Any other layout is an error.
int64_t first_sliding_layer(const Keys& keys, int64_t num_layers) {
  const json& types = keys.at("layer_types");
  if (!types.is_array() || static_cast<int64_t>(types.size()) != num_layers) {
    keys.fail("layer_types", "must list one type per layer (" + std::to_string(num_layers) + ")");
  }
  int64_t first = num_layers;
  for (int64_t i = 0; i < num_layers; ++i) {
    const json& t = types[static_cast<size_t>(i)];
    const std::string name = t.is_string() ? t.get<std::string>() : "";
    if (name != "sliding_attention" && name != "full_attention") {
      keys.fail("layer_types", "may only hold sliding_attention and full_attention");
    }
    if (name == "sliding_attention" && first == num_layers) first = i;
    if (name == "full_attention" && first < num_layers) {
      keys.fail("layer_types",
                "has a full_attention layer above a sliding_attention one; only global layers "
                "followed by sliding ones (max_window_layers) are supported");
    }
  }
  return first;
}

// Qwen2 / Qwen3's sliding window as transformers builds it: only with
// use_sliding_window and a sliding_window (absent: the class default 4096;
// null: none); then the layers marked sliding_attention in layer_types, or
// without that key the layers from max_window_layers (default 28) on, see
// that many keys and the ones below attend globally.
void read_qwen_sliding_window(const Keys& keys, const json& j, ModelConfig& c) {
  const bool use = keys.boolean("use_sliding_window", false);
  const int64_t window = j.contains("sliding_window")
                             ? (keys.has("sliding_window") ? keys.integer("sliding_window") : 0)
                             : 4096;
  if (window < 0) keys.fail("sliding_window", "must be >= 0 or null");
  int64_t first = keys.integer("max_window_layers", 28);
  if (keys.has("layer_types")) {
    first = first_sliding_layer(keys, c.num_layers);
    if (first < c.num_layers && (!use || window == 0)) {
      keys.fail("layer_types",
                "lists sliding_attention layers while use_sliding_window is false or "
                "sliding_window is null, which transformers cannot run either; set both or list "
                "only full_attention");
    }
  }
  c.sliding_window_pattern = 1;
  if (!use || window == 0 || first >= c.num_layers) {
    c.sliding_window = 0;
    c.sliding_window_first_layer = 0;
    return;
  }
  c.sliding_window = window;
  c.sliding_window_first_layer = std::max<int64_t>(first, 0);
}

// Whether two configs compute the same function (dims and traits).
std::string first_difference(const ModelConfig& a, const ModelConfig& b) {
  if (a.vocab_size != b.vocab_size || a.hidden_size != b.hidden_size ||
      a.intermediate_size != b.intermediate_size || a.num_layers != b.num_layers ||
      a.num_heads != b.num_heads || a.num_kv_heads != b.num_kv_heads ||
      a.resolved_head_dim() != b.resolved_head_dim() || a.tie_embeddings != b.tie_embeddings) {
    return "dimensions";
  }
  if (a.rope_theta != b.rope_theta || a.rope_scaling.type != b.rope_scaling.type) return "rope";
  if (a.rms_norm_eps != b.rms_norm_eps) return "rms_norm_eps";
  if (a.mlp_activation != b.mlp_activation) return "mlp_activation";
  if (a.norm_offset != b.norm_offset || a.norm_casting != b.norm_casting)
    return "norm_offset/norm_casting";
  if (a.scale_embeddings != b.scale_embeddings) return "scale_embeddings";
  if (a.post_norms != b.post_norms) return "post_norms";
  for (int64_t i = 0; i < a.num_layers; ++i) {
    if (a.layer_sliding_window(i) != b.layer_sliding_window(i)) return "sliding_window";
  }
  if (a.attn_softcap != b.attn_softcap) return "attn_softcap";
  if (a.final_softcap != b.final_softcap) return "final_softcap";
  if (std::abs(a.attention_scale() - b.attention_scale()) > 1e-12) return "query_pre_attn_scalar";
  if (a.qkv_bias != b.qkv_bias) return "qkv_bias";
  if (a.qk_norm != b.qk_norm) return "qk_norm";
  return "";
}

// The safetensors files of a model folder: name -> file, from the index when
// sharded.
struct WeightFiles {
  std::map<std::string, std::string> file_of;  // tensor -> file name (sharded) or empty
  std::vector<std::string> files;              // every file to open
  std::string single;                          // the one file when not sharded
};

WeightFiles find_weight_files(const fs::path& dir) {
  WeightFiles out;
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    json j;
    try {
      j = json::parse(read_text(index));
    } catch (const json::exception& error) {
      throw ModelIoError(index.string() + ": not valid JSON (" + std::string(error.what()) + ")");
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw ModelIoError(index.string() + ": has no weight_map object (tensor name -> file)");
    }
    std::set<std::string> files;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        throw ModelIoError(index.string() + ": weight_map['" + it.key() + "'] is not a file name");
      }
      const std::string file = it.value().get<std::string>();
      if (file.find('/') != std::string::npos || !fs::exists(dir / file)) {
        throw ModelIoError(index.string() + ": weight_map['" + it.key() + "'] = '" + file +
                           "' is not a file in " + dir.string());
      }
      out.file_of[it.key()] = file;
      files.insert(file);
    }
    out.files.assign(files.begin(), files.end());
    return out;
  }
  if (fs::exists(dir / "model.safetensors")) {
    out.single = "model.safetensors";
  } else {
    std::vector<std::string> found;
    if (fs::is_directory(dir)) {
      for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.path().extension() == ".safetensors")
          found.push_back(entry.path().filename().string());
      }
    }
    if (found.size() != 1) {
      const bool bin = fs::exists(dir / "pytorch_model.bin");
      throw ModelIoError(
          dir.string() + ": " +
          (found.empty() ? std::string("has no model.safetensors")
                         : std::string("has several .safetensors files but no "
                                       "model.safetensors.index.json")) +
          (bin ? " (pytorch_model.bin is not read: convert it to safetensors)" : "") +
          "; model.hf_path must be a Hugging Face model folder");
    }
    out.single = found[0];
  }
  out.files = {out.single};
  return out;
}

// Tensors HF checkpoints carry that are not parameters (old Llama files).
bool ignorable(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

namespace {
ModelConfig parse_hf_config_json(const std::string& text, const std::string& origin);
}  // namespace

const std::vector<std::string>& hf_architectures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& a : kArchitectures) out.push_back(a.hf_class);
    return out;
  }();
  return names;
}

ModelConfig parse_hf_config(const std::string& text, const std::string& origin) {
  try {
    return parse_hf_config_json(text, origin);
  } catch (const json::exception& error) {  // a value of an unexpected JSON type deep inside
    std::string message = error.what();
    throw ModelIoError(origin + ": " + message.substr(0, message.find('\n')));
  }
}

namespace {

ModelConfig parse_hf_config_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& error) {
    std::string message = error.what();
    throw ModelIoError(origin + ": not valid JSON (" + message.substr(0, message.find('\n')) + ")");
  }
  if (!j.is_object()) throw ModelIoError(origin + ": not a JSON object");
  Keys keys(j, origin);

  // Family from architectures[0], else model_type.
  const Architecture* arch = nullptr;
  std::string named;
  if (keys.has("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    named = j["architectures"][0].get<std::string>();
    for (const auto& a : kArchitectures) {
      if (named == a.hf_class) arch = &a;
    }
    if (arch == nullptr) {
      keys.fail("architectures", "is not supported (supported: " + supported_list() + ")");
    }
  } else {
    named = keys.text("model_type", "");
    for (const auto& a : kArchitectures) {
      if (named == a.model_type) arch = &a;
    }
    if (arch == nullptr) {
      keys.fail("model_type", "is not supported and there is no architectures list (supported: " +
                                  supported_list() + ")");
    }
  }
  const ModelFamily family = arch->family;
  ModelConfig c;
  apply_family_traits(c, family);
  const bool gemma = is_gemma(family);

  c.vocab_size = keys.integer("vocab_size");
  c.hidden_size = keys.integer("hidden_size");
  c.intermediate_size = keys.integer("intermediate_size");
  c.num_layers = keys.integer("num_hidden_layers");
  c.num_heads = keys.integer("num_attention_heads");
  // Absent keys take the HF class defaults.
  c.num_kv_heads =
      keys.integer("num_key_value_heads", hf_default_num_kv_heads(family, c.num_heads));
  // The classes' defaults: Gemma's 256 and Qwen3's 128 (not hidden / heads).
  c.head_dim = keys.integer("head_dim", gemma ? 256 : family == ModelFamily::qwen3 ? 128 : 0);
  if (!gemma && c.head_dim == c.hidden_size / std::max<int64_t>(c.num_heads, 1) &&
      c.hidden_size % std::max<int64_t>(c.num_heads, 1) == 0) {
    c.head_dim = 0;  // the default, kept implicit
  }
  c.max_seq_len =
      keys.integer("max_position_embeddings", hf_default_max_position_embeddings(family));
  c.rms_norm_eps = keys.number("rms_norm_eps", 1e-6);
  c.tie_embeddings = keys.boolean("tie_word_embeddings", gemma);
  c.init_std = keys.number("initializer_range", 0.02);
  read_rope(keys, origin, c);

  // Qwen2's q, k and v always carry biases and o none: its class ignores
  // attention_bias. Elsewhere it would bias o_proj too, which has no place here.
  if (family != ModelFamily::qwen2 && keys.boolean("attention_bias", false)) {
    keys.fail("attention_bias", "is not supported for " + std::string(arch->hf_class) +
                                    " (it biases o_proj too; only Qwen2's q, k and v biases are "
                                    "implemented)");
  }
  if (keys.boolean("mlp_bias", false)) keys.fail("mlp_bias", "is not supported (no biases)");
  if (keys.boolean("use_bidirectional_attention", false)) {
    keys.fail("use_bidirectional_attention", "is not supported (causal attention only)");
  }
  if (gemma) {
    // HF maps Gemma's legacy "gelu" to the tanh approximation.
    const std::string key = family == ModelFamily::gemma2 || keys.has("hidden_activation")
                                ? "hidden_activation"
                                : "hidden_act";
    const std::string act = keys.text(key, "gelu_pytorch_tanh");
    const bool ok = act == "gelu_pytorch_tanh" || (family == ModelFamily::gemma && act == "gelu");
    if (!ok) keys.fail(key, "is not supported for " + to_string(family) + " (gelu_pytorch_tanh)");
  } else {
    if (keys.text("hidden_act", "silu") != "silu") {
      keys.fail("hidden_act", "is not supported for " + to_string(family) + " (silu)");
    }
  }
  if (family == ModelFamily::mistral) {
    c.sliding_window = keys.has("sliding_window") ? keys.integer("sliding_window") : 0;
    if (!j.contains("sliding_window")) c.sliding_window = 4096;  // the class default
    c.sliding_window_pattern = 1;
    if (keys.has("layer_types")) {
      keys.fail("layer_types", "is not supported for MistralForCausalLM (every layer slides)");
    }
  }
  if (family == ModelFamily::gemma2) {
    c.sliding_window = j.contains("sliding_window")
                           ? (keys.has("sliding_window") ? keys.integer("sliding_window") : 0)
                           : 4096;
    c.sliding_window_pattern = 2;
    if (keys.has("layer_types")) {
      const int64_t pattern = layer_pattern(keys, c.num_layers);
      if (pattern == 0) {
        c.sliding_window = 0;
        c.sliding_window_pattern = 1;
      } else {
        c.sliding_window_pattern = pattern;
      }
    }
    c.query_pre_attn_scalar = keys.number("query_pre_attn_scalar", 256.0);
    c.attn_softcap =
        j.contains("attn_logit_softcapping") ? keys.number("attn_logit_softcapping", 0.0) : 50.0;
    c.final_softcap =
        j.contains("final_logit_softcapping") ? keys.number("final_logit_softcapping", 0.0) : 30.0;
  } else if (is_qwen(family)) {
    read_qwen_sliding_window(keys, j, c);
  } else if (keys.has("layer_types") && family != ModelFamily::mistral) {
    keys.fail("layer_types", "is not supported for " + std::string(arch->hf_class));
  }
  if (c.sliding_window < 0) keys.fail("sliding_window", "must be >= 0 or null");

  if (keys.has("bos_token_id")) c.bos_token_id = keys.integer("bos_token_id");
  if (keys.has("eos_token_id")) {
    const json& eos = j["eos_token_id"];
    if (eos.is_number_integer()) {
      c.eos_token_ids = {eos.get<int64_t>()};
    } else if (eos.is_array()) {
      for (const auto& id : eos) {
        if (!id.is_number_integer())
          keys.fail("eos_token_id", "must be an integer or a list of them");
        c.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      keys.fail("eos_token_id", "must be an integer or a list of them");
    }
  }
  try {
    c.validate();
  } catch (const std::invalid_argument& error) {
    throw ModelIoError(origin + ": " + error.what());
  }
  return c;
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.json";
  if (!fs::is_directory(dir)) {
    throw ModelIoError(dir +
                       ": is not a directory; model.hf_path must be a Hugging Face model folder "
                       "(config.json + *.safetensors)");
  }
  if (!fs::exists(path)) {
    throw ModelIoError(path.string() +
                       ": not found; model.hf_path must be a Hugging Face model folder");
  }
  return parse_hf_config(read_text(path), path.string());
}

std::string hf_config_json(const ModelConfig& c, at::ScalarType dtype) {
  const Architecture& arch = architecture_of_family(c.family);
  const bool gemma = is_gemma(c.family);
  const std::string dtype_name = dtype == at::kBFloat16 ? "bfloat16"
                                 : dtype == at::kHalf   ? "float16"
                                                        : "float32";
  json j = json::object();
  j["architectures"] = {arch.hf_class};
  j["model_type"] = arch.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.resolved_head_dim();
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["initializer_range"] = c.init_std;
  if (c.family != ModelFamily::qwen2)
    j["attention_bias"] = false;  // Qwen2's class has q/k/v biases whatever it says
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  j["torch_dtype"] = dtype_name;  // transformers 4
  j["dtype"] = dtype_name;        // transformers 5
  // RoPE in the legacy keys, which transformers 4 and 5 both read.
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == RopeScalingType::llama3) {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (!gemma) {
    j["hidden_act"] = "silu";
    if (c.family == ModelFamily::llama) j["mlp_bias"] = false;
  } else {
    j["hidden_act"] = "gelu_pytorch_tanh";
    j["hidden_activation"] = "gelu_pytorch_tanh";
  }
  if (c.family == ModelFamily::mistral) {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  }
  if (c.family == ModelFamily::gemma2) {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    // transformers 5 types it int (and checks): an integral value is written as one.
    const double scalar = c.query_pre_attn_scalar > 0.0
                              ? c.query_pre_attn_scalar
                              : static_cast<double>(c.resolved_head_dim());
    j["query_pre_attn_scalar"] =
        scalar == std::floor(scalar) ? json(static_cast<int64_t>(scalar)) : json(scalar);
    j["attn_logit_softcapping"] = c.attn_softcap > 0.0 ? json(c.attn_softcap) : json(nullptr);
    j["final_logit_softcapping"] = c.final_softcap > 0.0 ? json(c.final_softcap) : json(nullptr);
    json types = json::array();
    for (int64_t i = 0; i < c.num_layers; ++i) {
      types.push_back(c.layer_sliding_window(i) > 0 ? "sliding_attention" : "full_attention");
    }
    j["layer_types"] = types;
  }
  if (is_qwen(c.family)) {
    // Global layers, then sliding ones from max_window_layers on (or none).
    json types = json::array();
    int64_t first = c.num_layers;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const bool sliding = c.layer_sliding_window(i) > 0;
      if (sliding && first == c.num_layers) first = i;
      types.push_back(sliding ? "sliding_attention" : "full_attention");
    }
    const bool any = first < c.num_layers;
    j["use_sliding_window"] = any;
    j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
    j["max_window_layers"] = first;
    j["layer_types"] = types;
  }
  const std::string text = j.dump(2) + "\n";
  // What HF would build from this file must be this model.
  const ModelConfig back = parse_hf_config(text, "exported config.json");
  const std::string difference = first_difference(c, back);
  if (!difference.empty()) {
    throw ModelIoError("cannot export to " + std::string(arch.hf_class) + ": the model's " +
                       difference + " has no expression in that Hugging Face config (a " +
                       to_string(c.family) +
                       " with these traits would load as a different model); train with the "
                       "family's own traits to export it");
  }
  return text;
}

HfWeights::HfWeights(const TransformerImpl& model, const std::string& dir_text) {
  const fs::path dir(dir_text);
  const WeightFiles files = find_weight_files(dir);
  for (const auto& name : files.files) {
    open_[name] = std::make_unique<safetensors::File>((dir / name).string());
  }
  const std::string config_path = (dir / "config.json").string();
  std::set<std::pair<std::string, std::string>> used;  // (file, tensor)

  for (const auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const at::Tensor& param =
        item.value();  // its name and shape only (it may live on the meta device)
    std::string file;
    if (!files.single.empty()) {
      file = files.single;
    } else {
      auto it = files.file_of.find(name);
      if (it == files.file_of.end()) {
        throw ModelIoError((dir / "model.safetensors.index.json").string() + ": has no tensor '" +
                           name + "', which " + config_path + " implies");
      }
      file = it->second;
    }
    const safetensors::File& f = *open_.at(file);
    const safetensors::TensorInfo* info = f.find(name);
    if (info == nullptr) {
      throw ModelIoError(f.path() + ": has no tensor '" + name + "', which " + config_path +
                         " implies (a different architecture or a partial checkpoint)");
    }
    const std::string where = f.path() + ": tensor '" + name + "'";
    const at::ScalarType stored = safetensors::scalar_type(info->dtype, where);
    if (stored != at::kFloat && stored != at::kBFloat16 && stored != at::kHalf) {
      throw ModelIoError(
          where + " has dtype " + info->dtype +
          "; only F32, BF16 and F16 weights are loaded (quantized checkpoints are not)");
    }
    if (at::IntArrayRef(info->shape) != param.sizes()) {
      throw ModelIoError(where + " has shape " + shape_text(info->shape) + " but " + config_path +
                         " gives " + shape_text(param.sizes()) +
                         "; the weights and config.json do not belong together");
    }
    file_of_param_[name] = file;
    used.insert({file, name});
  }
  // A tensor the model does not use means a different architecture: refuse
  // rather than silently drop it.
  for (const auto& [file, f] : open_) {
    for (const auto& info : f->tensors()) {
      if (used.count({file, info.name}) || ignorable(info.name)) continue;
      if (info.name == "lm_head.weight" && model.config().tie_embeddings) continue;  // HF ties it
      if (!files.single.empty() || files.file_of.count(info.name)) {
        throw ModelIoError(f->path() + ": tensor '" + info.name + "' is not a parameter of this " +
                           to_string(model.config().family) + " model (config.json: " +
                           config_path + "); the checkpoint has weights the model would ignore");
      }
    }
  }
}

HfWeights::~HfWeights() = default;

at::Tensor HfWeights::view(const std::string& name) const {
  const auto it = file_of_param_.find(name);
  if (it == file_of_param_.end()) {
    throw ModelIoError("HfWeights::view: '" + name +
                       "' is not a parameter of the model they were checked against");
  }
  return open_.at(it->second)->view(name);
}

void load_hf_weights(TransformerImpl& model, const std::string& dir) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) {
    if (item.value().device().is_meta()) {
      throw ModelIoError(
          "load_hf_weights: the model lives on the meta device; build it on a real device "
          "(or copy from HfWeights)");
    }
  }
  const HfWeights weights(model, dir);  // everything checked before anything is copied
  for (auto& item : model.named_parameters()) {
    // cast: stored dtype (F32/BF16/F16) -> the parameter dtype, on its device
    item.value().copy_(weights.view(item.key()));
  }
}

void save_hf_model(const TransformerImpl& model, const std::string& dir_text,
                   const HfExportOptions& options) {
  const fs::path dir(dir_text);
  const at::ScalarType dtype =
      options.dtype == at::ScalarType::Undefined ? model.compute_dtype() : options.dtype;
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) {
    throw ModelIoError(std::string("export dtype ") + c10::toString(dtype) +
                       " is not supported (fp32, bf16, fp16)");
  }
  const std::string config_text = hf_config_json(model.config(), dtype);  // validates first
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir))
    throw ModelIoError(dir.string() + ": cannot create the output folder");
  // Stale weights from an earlier export (another shard count) would be
  // loaded instead of, or mixed with, these: remove them.
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool weights = entry.path().extension() == ".safetensors" &&
                         (name == "model.safetensors" || name.rfind("model-", 0) == 0);
    if (weights || name == "model.safetensors.index.json") fs::remove(entry.path());
  }

  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& item : model.named_parameters()) {
    // cast: parameters to the storage dtype, on the CPU
    at::Tensor t = item.value().detach().to(at::kCPU, dtype).contiguous();
    const int64_t bytes = t.numel() * t.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(item.key(), std::move(t));
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  if (shards.size() == 1) {
    safetensors::write((dir / "model.safetensors").string(), shards[0]);
  } else {
    json weight_map = json::object();
    const size_t n = shards.size();
    for (size_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      safetensors::write((dir / name).string(), shards[i]);
      for (const auto& [tensor, value] : shards[i]) weight_map[tensor] = name;
    }
    json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    std::ofstream out(dir / "model.safetensors.index.json");
    out << index.dump(2) << "\n";
    if (!out)
      throw ModelIoError((dir / "model.safetensors.index.json").string() + ": write failed");
  }
  std::ofstream out(dir / "config.json");
  out << config_text;
  out.close();
  if (!out) throw ModelIoError((dir / "config.json").string() + ": write failed");
}

}  // namespace liger::models
