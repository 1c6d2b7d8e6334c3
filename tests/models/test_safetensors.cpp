// Our safetensors reader/writer and the HF folder loader: round trips, and
// every way a file or folder can be wrong gives a one-line ModelIoError that
// names the file and the tensor (or key) — never a crash, never a silently
// wrong model.
#include "kernels/registry.h"
#include "models/hf.h"
#include "models/safetensors.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using liger::models::ModelFamily;
using liger::models::ModelIoError;
using liger::models::RopeScalingType;
namespace st = liger::models::safetensors;

namespace {

// Writes a safetensors file from a raw header text and data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               int64_t claimed_header_len = -1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n =
      claimed_header_len >= 0 ? static_cast<uint64_t>(claimed_header_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

// The message of the ModelIoError `f` throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ModelIoError& error) {
    return error.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One line, naming all the parts.
void check_message(const std::string& message, const std::vector<std::string>& parts) {
  INFO(message);
  REQUIRE_FALSE(message.empty());
  CHECK(message.find('\n') == std::string::npos);
  for (const auto& part : parts) CHECK(contains(message, part));
}

liger::models::ModelConfig small_llama() {
  liger::models::ModelConfig c;
  liger::models::apply_family_traits(c, ModelFamily::llama);
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 32;
  return c;
}

liger::models::Transformer build(const liger::models::ModelConfig& c) {
  liger::models::Transformer m(c, liger::kernels::KernelSet::reference(),
                               at::TensorOptions().dtype(at::kFloat), at::kFloat);
  m->init_weights(1);
  return m;
}

}  // namespace

TEST_CASE("safetensors: write then read gives the same tensors, dtypes and metadata") {
  const std::string dir = liger::testing::temp_dir("st_roundtrip");
  const std::string path = dir + "/a.safetensors";
  const at::Tensor f32 = torch::randn({3, 5});
  const at::Tensor bf16 = torch::randn({7}).to(at::kBFloat16);
  const at::Tensor f16 = torch::randn({2, 1, 3}).to(at::kHalf);
  const at::Tensor i64 = torch::arange(6, at::kLong).reshape({2, 3});
  const at::Tensor empty = torch::zeros({0, 4});
  const at::Tensor strided = torch::randn({4, 6}).t();  // not contiguous
  st::write(path, {{"w", f32}, {"b", bf16}, {"h", f16}, {"i", i64}, {"e", empty}, {"t", strided}});
  st::File file(path);
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.tensors().size() == 6);
  CHECK(torch::equal(file.read("w"), f32));
  CHECK(torch::equal(file.read("b"), bf16));
  CHECK(file.read("b").scalar_type() == at::kBFloat16);
  CHECK(torch::equal(file.read("h"), f16));
  CHECK(torch::equal(file.read("i"), i64));
  CHECK(file.read("e").sizes() == at::IntArrayRef({0, 4}));
  CHECK(torch::equal(file.read("t"), strided));
  CHECK(file.find("nope") == nullptr);
  check_message(error_of([&] { file.read("nope"); }), {path, "nope"});
  // The header is padded so that the data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
}

TEST_CASE("safetensors: broken files are one-line errors naming the file and the tensor") {
  const std::string dir = liger::testing::temp_dir("st_broken");
  const std::string data(24, '\0');  // room for [2, 3] F32
  const std::string good = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";

  const std::string tiny = dir + "/tiny.safetensors";
  std::ofstream(tiny, std::ios::binary) << "abc";
  check_message(error_of([&] { st::File f(tiny); }), {tiny, "truncated"});

  const std::string missing = dir + "/missing.safetensors";
  check_message(error_of([&] { st::File f(missing); }), {missing, "cannot open"});

  const std::string header_too_long = dir + "/header.safetensors";
  write_raw(header_too_long, good, data, 1 << 20);
  check_message(error_of([&] { st::File f(header_too_long); }), {header_too_long, "header length"});

  const std::string truncated = dir + "/truncated.safetensors";
  write_raw(truncated, good, data.substr(0, 10));
  check_message(error_of([&] { st::File f(truncated); }), {truncated, "'w'", "truncated"});

  const std::string not_json = dir + "/notjson.safetensors";
  write_raw(not_json, "{\"w\": [", data);
  check_message(error_of([&] { st::File f(not_json); }), {not_json, "JSON"});

  const std::string backwards = dir + "/backwards.safetensors";
  write_raw(backwards, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[24,0]}})", data);
  check_message(error_of([&] { st::File f(backwards); }), {backwards, "'w'", "data_offsets"});

  const std::string wrong_size = dir + "/size.safetensors";
  write_raw(wrong_size, R"({"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,24]}})", data);
  check_message(error_of([&] { st::File f(wrong_size); }), {wrong_size, "'w'", "needs 32"});

  const std::string negative = dir + "/negative.safetensors";
  write_raw(negative, R"({"w":{"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]}})", data);
  check_message(error_of([&] { st::File f(negative); }), {negative, "'w'", "negative"});

  const std::string overlap = dir + "/overlap.safetensors";
  write_raw(
      overlap,
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
      data);
  check_message(error_of([&] { st::File f(overlap); }), {overlap, "overlap"});

  const std::string unknown = dir + "/dtype.safetensors";
  write_raw(unknown, R"({"w":{"dtype":"Q4_K","shape":[2,3],"data_offsets":[0,24]}})", data);
  check_message(error_of([&] { st::File f(unknown); }), {unknown, "'w'", "Q4_K", "not supported"});

  const std::string no_fields = dir + "/fields.safetensors";
  write_raw(no_fields, R"({"w":{"dtype":"F32"}})", data);
  check_message(error_of([&] { st::File f(no_fields); }), {no_fields, "'w'", "data_offsets"});

  // And the good one reads.
  const std::string fine = dir + "/fine.safetensors";
  write_raw(fine, good, data);
  CHECK(st::File(fine).read("w").sizes() == at::IntArrayRef({2, 3}));
}

TEST_CASE(
    "HF folders: export/load round trip; bf16 and fp16 files convert to the parameter dtype") {
  auto model = build(small_llama());
  const std::string dir = liger::testing::temp_dir("hf_roundtrip");
  liger::models::HfExportOptions options;
  options.dtype = at::kBFloat16;
  liger::models::save_hf_model(*model, dir, options);
  CHECK(st::File(dir + "/model.safetensors").find("lm_head.weight")->dtype == "BF16");
  auto loaded = build(small_llama());
  liger::models::load_hf_weights(*loaded, dir);
  auto params = loaded->named_parameters();
  for (const auto& item : model->named_parameters()) {
    INFO(item.key());
    CHECK(params[item.key()].scalar_type() == at::kFloat);
    CHECK(torch::equal(params[item.key()], item.value().to(at::kBFloat16).to(at::kFloat)));
  }
  options.dtype = at::kHalf;
  liger::models::save_hf_model(*model, dir, options);
  CHECK(st::File(dir + "/model.safetensors").find("lm_head.weight")->dtype == "F16");
  liger::models::load_hf_weights(*loaded, dir);
  for (const auto& item : model->named_parameters()) {
    CHECK(torch::equal(params[item.key()], item.value().to(at::kHalf).to(at::kFloat)));
  }
  // Sharding: a small shard size gives several files and an index; an
  // earlier single-file export in the folder is removed, not left to shadow it.
  options.dtype = at::kFloat;
  options.max_shard_bytes = 4096;
  liger::models::save_hf_model(*model, dir, options);
  CHECK_FALSE(fs::exists(dir + "/model.safetensors"));
  REQUIRE(fs::exists(dir + "/model.safetensors.index.json"));
  liger::models::load_hf_weights(*loaded, dir);
  for (const auto& item : model->named_parameters())
    CHECK(torch::equal(params[item.key()], item.value()));
  CHECK(liger::models::read_hf_config(dir).num_kv_heads == 2);
}

TEST_CASE("HF folders: HfWeights checks a model on the meta device and maps each tensor") {
  auto model = build(small_llama());
  const std::string dir = liger::testing::temp_dir("hf_weights_meta");
  liger::models::HfExportOptions options;
  options.dtype = at::kBFloat16;
  options.max_shard_bytes = 4096;  // several files and an index
  liger::models::save_hf_model(*model, dir, options);
  // What a sharded rank builds: names and shapes only, no memory.
  liger::models::Transformer meta(small_llama(), liger::kernels::KernelSet::reference(),
                                  at::TensorOptions().dtype(at::kFloat).device(at::kMeta),
                                  at::kFloat);
  const liger::models::HfWeights weights(*meta, dir);
  for (const auto& item : model->named_parameters()) {
    INFO(item.key());
    const at::Tensor view = weights.view(item.key());
    CHECK(view.device().is_cpu());
    CHECK(view.scalar_type() == at::kBFloat16);  // as stored: the caller casts
    CHECK(torch::equal(view, item.value().to(at::kBFloat16)));
    // A rank's rows, without touching the others.
    CHECK(torch::equal(view.narrow(0, 1, 1), item.value().narrow(0, 1, 1).to(at::kBFloat16)));
  }
  const std::string unknown = error_of([&] { weights.view("model.layers.9.mlp.up_proj.weight"); });
  INFO(unknown);
  CHECK(unknown.find("'model.layers.9.mlp.up_proj.weight' is not a parameter") !=
        std::string::npos);
  // The meta model cannot be loaded into (nothing to copy into), with a message saying so.
  const std::string into_meta = error_of([&] { liger::models::load_hf_weights(*meta, dir); });
  INFO(into_meta);
  CHECK(into_meta.find("the model lives on the meta device") != std::string::npos);
}

TEST_CASE("HF folders: wrong weights are errors naming the file and the tensor") {
  auto model = build(small_llama());
  const std::string dir = liger::testing::temp_dir("hf_wrong");
  liger::models::save_hf_model(*model, dir);
  const std::string file = dir + "/model.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model->named_parameters()) tensors.emplace_back(item.key(), item.value());

  // A config that disagrees with the weights' shapes.
  auto other = small_llama();
  other.intermediate_size = 32;
  auto wider = build(other);
  check_message(error_of([&] { liger::models::load_hf_weights(*wider, dir); }),
                {file, "model.layers.0.mlp.gate_proj.weight", "shape [24, 16]", "[32, 16]"});

  // A missing tensor.
  auto fewer = tensors;
  fewer.erase(fewer.begin() + 3);
  st::write(file, fewer);
  check_message(error_of([&] { liger::models::load_hf_weights(*model, dir); }),
                {file, tensors[3].first});

  // A tensor the model does not have (e.g. a bias): refused, not dropped.
  auto more = tensors;
  more.emplace_back("model.layers.0.self_attn.q_proj.bias", torch::zeros({16}));
  st::write(file, more);
  check_message(error_of([&] { liger::models::load_hf_weights(*model, dir); }),
                {file, "model.layers.0.self_attn.q_proj.bias", "not a parameter"});

  // Old Llama files carry rotary inv_freq buffers: ignored.
  auto with_buffer = tensors;
  with_buffer.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", torch::zeros({2}));
  st::write(file, with_buffer);
  CHECK_NOTHROW(liger::models::load_hf_weights(*model, dir));

  // Integer (quantized) weights.
  auto quantized = tensors;
  quantized[0].second = torch::zeros(quantized[0].second.sizes(), at::kChar);
  st::write(file, quantized);
  check_message(error_of([&] { liger::models::load_hf_weights(*model, dir); }),
                {file, tensors[0].first, "I8"});

  // An index naming a file that is not there.
  fs::remove(file);
  nlohmann::json index = {{"weight_map", {{tensors[0].first, "model-00001-of-00002.safetensors"}}}};
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  check_message(error_of([&] { liger::models::load_hf_weights(*model, dir); }),
                {"model.safetensors.index.json", "model-00001-of-00002.safetensors"});
  fs::remove(dir + "/model.safetensors.index.json");
  check_message(error_of([&] { liger::models::load_hf_weights(*model, dir); }),
                {dir, "model.safetensors"});
}

TEST_CASE("HF config.json: families, traits and the unsupported, each named") {
  const std::string origin = "x/config.json";
  auto parse = [&](nlohmann::json j) { return liger::models::parse_hf_config(j.dump(), origin); };
  const nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}},
                               {"vocab_size", 100},
                               {"hidden_size", 64},
                               {"intermediate_size", 96},
                               {"num_hidden_layers", 4},
                               {"num_attention_heads", 4},
                               {"num_key_value_heads", 2},
                               {"rms_norm_eps", 1e-5},
                               {"rope_theta", 500000.0},
                               {"max_position_embeddings", 256},
                               {"eos_token_id", {1, 5}}};
  auto llama = parse(base);
  CHECK(llama.family == ModelFamily::llama);
  CHECK(llama.resolved_head_dim() == 16);
  CHECK(llama.rope_theta == 500000.0);
  CHECK_FALSE(llama.tie_embeddings);
  CHECK(llama.eos_token_ids == std::vector<int64_t>{1, 5});

  // transformers 5 writes rope_parameters instead of rope_theta / rope_scaling.
  auto v5 = base;
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 1234.0},
                           {"factor", 8.0},           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto scaled = parse(v5);
  CHECK(scaled.rope_theta == 1234.0);
  CHECK(scaled.rope_scaling.type == RopeScalingType::llama3);
  CHECK(scaled.rope_scaling.factor == 8.0);

  auto gemma2 = base;
  gemma2["architectures"] = {"Gemma2ForCausalLM"};
  gemma2["head_dim"] = 32;
  gemma2["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                           "full_attention"};
  gemma2["sliding_window"] = 7;
  gemma2["final_logit_softcapping"] = nullptr;
  auto g2 = parse(gemma2);
  CHECK(g2.post_norms);
  CHECK(g2.norm_offset == 1.0);
  CHECK(g2.tie_embeddings);
  CHECK(g2.layer_sliding_window(0) == 7);
  CHECK(g2.layer_sliding_window(1) == 0);
  CHECK(g2.attn_softcap == 50.0);  // the class default when absent
  CHECK(g2.final_softcap == 0.0);  // null: off
  CHECK(g2.query_pre_attn_scalar == 256.0);

  auto mistral = base;
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = nullptr;
  CHECK(parse(mistral).sliding_window == 0);  // Mistral v0.2+: no window

  // Qwen2: q/k/v biases whatever attention_bias says (its class ignores the
  // key); a sliding window only with use_sliding_window, on the layers from
  // max_window_layers on, or on those layer_types lists.
  auto qwen2 = base;
  qwen2["architectures"] = {"Qwen2ForCausalLM"};
  qwen2["attention_bias"] = false;
  qwen2["use_sliding_window"] = false;
  qwen2["sliding_window"] = 4096;
  qwen2["max_window_layers"] = 2;
  const auto q2 = parse(qwen2);
  CHECK(q2.family == ModelFamily::qwen2);
  CHECK(q2.qkv_bias);
  CHECK_FALSE(q2.qk_norm);
  CHECK_FALSE(q2.tie_embeddings);
  CHECK(q2.layer_sliding_window(3) == 0);
  qwen2["use_sliding_window"] = true;
  qwen2["sliding_window"] = 9;
  const auto q2_windowed = parse(qwen2);
  CHECK(q2_windowed.layer_sliding_window(1) == 0);
  CHECK(q2_windowed.layer_sliding_window(2) == 9);
  CHECK(q2_windowed.layer_sliding_window(3) == 9);
  auto listed = qwen2;
  listed["layer_types"] = {"full_attention", "full_attention", "full_attention",
                           "sliding_attention"};
  CHECK(parse(listed).layer_sliding_window(2) == 0);  // layer_types over max_window_layers
  CHECK(parse(listed).layer_sliding_window(3) == 9);
  // The export says the same: these layers slide in what HF reads back.
  const auto q2_back =
      liger::models::parse_hf_config(liger::models::hf_config_json(q2_windowed, at::kFloat), "b");
  CHECK(q2_back.qkv_bias);
  for (int64_t layer = 0; layer < 4; ++layer) {
    CHECK(q2_back.layer_sliding_window(layer) == q2_windowed.layer_sliding_window(layer));
  }

  // Qwen3: q/k norms, and the class's head_dim 128 when absent (not hidden / heads = 16).
  auto qwen3 = base;
  qwen3["architectures"] = {"Qwen3ForCausalLM"};
  const auto q3 = parse(qwen3);
  CHECK(q3.family == ModelFamily::qwen3);
  CHECK(q3.qk_norm);
  CHECK_FALSE(q3.qkv_bias);
  CHECK(q3.resolved_head_dim() == 128);
  CHECK(q3.sliding_window == 0);
  CHECK(liger::models::parse_hf_config(liger::models::hf_config_json(q3, at::kFloat), "b")
            .resolved_head_dim() == 128);

  auto with = [&](const std::string& key, nlohmann::json value) {
    auto j = base;
    j[key] = value;
    return error_of([&] { parse(j); });
  };
  check_message(with("architectures", {"Phi3ForCausalLM"}),
                {origin, "architectures", "Phi3ForCausalLM", "Qwen3ForCausalLM"});
  check_message(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}),
                {origin, "rope_scaling", "yarn"});
  check_message(with("attention_bias", true), {origin, "attention_bias"});
  check_message(with("hidden_act", "gelu"), {origin, "hidden_act", "gelu"});
  check_message(with("num_hidden_layers", "four"), {origin, "num_hidden_layers"});
  check_message(with("num_key_value_heads", 3), {origin, "num_kv_heads"});
  auto irregular = gemma2;
  irregular["layer_types"] = {"sliding_attention", "sliding_attention", "full_attention",
                              "full_attention"};
  check_message(error_of([&] { parse(irregular); }), {origin, "layer_types"});
  auto qwen3_biased = qwen3;
  qwen3_biased["attention_bias"] = true;  // Qwen3 would bias o_proj as well
  check_message(error_of([&] { parse(qwen3_biased); }),
                {origin, "attention_bias", "Qwen3ForCausalLM", "o_proj"});
  auto qwen2_irregular = qwen2;
  qwen2_irregular["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                                    "sliding_attention"};
  check_message(error_of([&] { parse(qwen2_irregular); }),
                {origin, "layer_types", "max_window_layers"});
  auto qwen2_unused = listed;
  qwen2_unused["use_sliding_window"] = false;
  check_message(error_of([&] { parse(qwen2_unused); }),
                {origin, "layer_types", "use_sliding_window"});
  auto no_hidden = base;
  no_hidden.erase("hidden_size");
  check_message(error_of([&] { parse(no_hidden); }), {origin, "hidden_size", "required"});
  check_message(error_of([&] { liger::models::parse_hf_config("{", origin); }), {origin, "JSON"});
  check_message(error_of([&] { liger::models::read_hf_config("/nonexistent/model"); }),
                {"/nonexistent/model"});

  // Export refuses what the family's HF config cannot say.
  auto windowed_llama = llama;
  windowed_llama.sliding_window = 8;
  check_message(error_of([&] { liger::models::hf_config_json(windowed_llama, at::kFloat); }),
                {"LlamaForCausalLM", "sliding_window"});
  auto normed_llama = llama;
  normed_llama.qk_norm = true;
  check_message(error_of([&] { liger::models::hf_config_json(normed_llama, at::kFloat); }),
                {"LlamaForCausalLM", "qk_norm"});
  // And what it writes parses back to the same model.
  const auto back =
      liger::models::parse_hf_config(liger::models::hf_config_json(g2, at::kBFloat16), "back");
  CHECK(back.layer_sliding_window(2) == 7);
  CHECK(back.head_dim == 32);
}
