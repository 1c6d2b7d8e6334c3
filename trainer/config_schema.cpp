#include "trainer/config_schema.h"

#include <algorithm>
#include <cstdint>
#include <sstream>

namespace liger::config {
namespace {

KeySpec integer(const char* section, const char* name, const char* def, double min, double max,
                const char* doc, bool nullable = false) {
  KeySpec k{section, name, KeyType::integer, def, doc, min, max, {}, nullable};
  return k;
}
KeySpec number(const char* section, const char* name, const char* def, double min, double max,
               const char* doc, bool nullable = false) {
  KeySpec k{section, name, KeyType::number, def, doc, min, max, {}, nullable};
  return k;
}
KeySpec boolean(const char* section, const char* name, const char* def, const char* doc,
                bool nullable = false) {
  KeySpec k{section, name, KeyType::boolean, def, doc};
  k.nullable = nullable;
  return k;
}
KeySpec text(const char* section, const char* name, const char* def, const char* doc) {
  KeySpec k{section, name, KeyType::string, def, doc};
  return k;
}
KeySpec choice(const char* section, const char* name, const char* def,
               std::vector<std::string> choices, const char* doc) {
  KeySpec k{section, name, KeyType::choice, def, doc};
  k.choices = std::move(choices);
  return k;
}
KeySpec string_list(const char* section, const char* name, const char* def, const char* doc) {
  KeySpec k{section, name, KeyType::string_list, def, doc};
  return k;
}

constexpr double kMaxInt = 9.0e15;

std::vector<KeySpec> build_schema() {
  return {
      // ---------------------------------------------------------------- model
      choice("model", "preset", "tiny",
             {"tiny", "llama3_1b", "llama3_8b", "llama2_7b", "mistral_7b", "gemma_2b", "gemma_7b",
              "gemma2_2b", "gemma2_9b"},
             "architecture preset (family traits + dimensions); the keys below override single "
             "dimensions and traits"),
      text("model", "hf_path", "''",
           "Hugging Face model folder (config.json + *.safetensors): architecture and weights come "
           "from it instead of model.preset; '' = train from the preset's random init"),
      choice("model", "dtype", "fp32", {"fp32", "bf16", "fp16"},
             "compute dtype of activations (parameters stay fp32 when training.master_weights is on)"),
      integer("model", "vocab_size", "null", 1, kMaxInt,
              "vocabulary size; null = the preset's (tiny: the tokenizer's)", true),
      integer("model", "hidden_size", "null", 1, kMaxInt, "model width; null = the preset's", true),
      integer("model", "intermediate_size", "null", 1, kMaxInt,
              "MLP width; null = the preset's", true),
      integer("model", "num_layers", "null", 1, 10000, "decoder layers; null = the preset's", true),
      integer("model", "num_heads", "null", 1, 10000, "query heads; null = the preset's", true),
      integer("model", "num_kv_heads", "null", 1, 10000,
              "key/value heads (GQA); must divide num_heads; null = the preset's", true),
      integer("model", "head_dim", "null", 2, 4096,
              "per-head width (even); null = hidden_size / num_heads or the preset's", true),
      number("model", "rope_theta", "null", 1.0, 1e12, "RoPE base frequency; null = the preset's",
             true),
      number("model", "rms_norm_eps", "null", 0.0, 1.0, "RMSNorm epsilon; null = the preset's",
             true),
      boolean("model", "tie_embeddings", "null",
              "share embedding and lm_head weights; null = the preset's", true),
      integer("model", "max_seq_len", "null", 1, kMaxInt,
              "longest sequence the model is built for; null = the preset's", true),
      integer("model", "sliding_window", "null", 0, kMaxInt,
              "keys a query sees in sliding-window layers (self included); 0 = global attention; "
              "null = the preset's (mistral_7b, gemma2_*: 4096)",
              true),
      number("model", "attn_softcap", "null", 0.0, 1e6,
             "attention-logit softcap c: scores <- c*tanh(scores/c); 0 = off; null = the preset's "
             "(gemma2_*: 50)",
             true),
      number("model", "final_softcap", "null", 0.0, 1e6,
             "final-logit softcap applied by the loss; 0 = off; null = the preset's (gemma2_*: 30)",
             true),
      number("model", "query_pre_attn_scalar", "null", 0.0, 1e9,
             "attention scale 1/sqrt(this); 0 = 1/sqrt(head_dim); null = the preset's (gemma2_*: 256)",
             true),
      number("model", "init_std", "0.02", 0.0, 10.0,
             "std of the normal init of every weight matrix (HF initializer_range)"),
      // ---------------------------------------------------------- adapters (LoRA)
      choice("model", "adapter", "none", {"none", "lora"},
             "none = train every parameter; lora = freeze the base model (in model.dtype, no gradients or "
             "optimizer state) and train LoRA adapters (the lora: section)"),
      text("model", "adapter_path", "''",
           "a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) to start the adapters "
           "from, to continue training or evaluate it; '' = fresh adapters (A random, B zero)"),
      integer("lora", "rank", "16", 1, 65536, "rank r of each adapter: A [r, in], B [out, r]"),
      number("lora", "alpha", "null", 0.0, 1e9,
             "the adapters' output is scaled by alpha / rank; null = 2 x rank", true),
      number("lora", "dropout", "0", 0.0, 0.99, "dropout on the adapters' input during training"),
      string_list("lora", "target_modules", "[all_linear]",
                  "projections that get adapters (HF names): q_proj, k_proj, v_proj, o_proj, gate_proj, "
                  "up_proj, down_proj, or all_linear (those seven)"),
      string_list("lora", "modules_to_save", "[]",
                  "modules trained in full beside the adapters, as PEFT's modules_to_save: embed_tokens, "
                  "lm_head"),

      // ----------------------------------------------------------------- data
      string_list("data", "train", "[data/samples/tinyshakespeare.txt]",
                  "training files (.txt = one document; .jsonl = one document per line; .bin = token ids)"),
      choice("data", "format", "auto",
             {"auto", "text", "jsonl_text", "prompt_completion", "chat", "tokens_jsonl", "tokens_bin"},
             "reader; auto: .txt -> text, .bin -> tokens_bin, .jsonl -> by the fields of its first line "
             "(messages -> chat, input_ids -> tokens_jsonl, prompt+completion, text)"),
      choice("data", "chat_template", "auto", {"auto", "llama3", "mistral", "gemma"},
             "chat format: how messages are rendered; auto = from the tokenizer's special tokens"),
      choice("data", "token_dtype", "auto", {"auto", "uint16", "uint32"},
             "tokens_bin: width of a token id; auto = from an llm.c header (required without one)"),
      choice("data", "packing", "cross_document", {"cross_document", "isolated"},
             "cross_document: a window is one sequence; isolated: positions restart at each document "
             "and no label crosses into the next document"),
      text("data", "tokenizer", "data/samples/shakespeare_bpe1024.model",
           "tokenizer: a SentencePiece .model, a Hugging Face tokenizer.json (byte-level BPE), or a "
           "model folder holding one"),
      text("data", "bos_token", "''",
           "BOS token by its spelling (e.g. '<|begin_of_text|>'); '' = the tokenizer's own"),
      text("data", "eos_token", "''",
           "EOS token by its spelling (e.g. '<|end_of_text|>'); '' = the tokenizer's own"),
      integer("data", "seq_len", "256", 2, 1048576, "tokens per training sequence"),
      boolean("data", "add_bos", "true", "put BOS at the start of each document"),
      boolean("data", "add_eos", "true", "put EOS after each document (the packing separator)"),
      string_list("data", "eval", "[]",
                  "evaluation files (read like data.train); exclusive with eval_fraction"),
      number("data", "eval_fraction", "0", 0.0, 0.5,
             "hold out this fraction of the training windows (the last ones) for evaluation; 0 = none"),

      // ------------------------------------------------------------- training
      choice("training", "device", "auto", {"auto", "cpu", "cuda"},
             "auto = cuda when a GPU is visible, else cpu"),
      integer("training", "steps", "300", 1, kMaxInt, "optimizer steps"),
      integer("training", "micro_batch_size", "8", 1, 1048576, "sequences per forward/backward"),
      integer("training", "gradient_accumulation_steps", "1", 1, 1048576,
              "micro-batches per optimizer step (the loss is normalised over all of them)"),
      number("training", "lr", "0.001", 0.0, 10.0, "peak learning rate"),
      choice("training", "lr_schedule", "cosine", {"constant", "linear", "cosine"},
             "decay after warmup"),
      integer("training", "warmup_steps", "10", 0, kMaxInt, "linear warmup from 0 to lr"),
      number("training", "min_lr_ratio", "0.1", 0.0, 1.0,
             "floor of the linear/cosine decay, as a fraction of lr"),
      number("training", "weight_decay", "0.1", 0.0, 10.0,
             "AdamW decoupled weight decay (never applied to norms and biases)"),
      number("training", "beta1", "0.9", 0.0, 0.999999, "AdamW beta1"),
      number("training", "beta2", "0.95", 0.0, 0.999999999, "AdamW beta2"),
      number("training", "eps", "1e-8", 0.0, 1.0, "AdamW epsilon"),
      number("training", "grad_clip", "1.0", 0.0, 1e12, "max global grad norm; 0 = no clipping"),
      integer("training", "seed", "1234", 0, kMaxInt, "seeds init, data order and sampling"),
      boolean("training", "master_weights", "true",
              "keep fp32 parameters and optimizer state when model.dtype is bf16/fp16"),
      choice("training", "precision", "auto", {"auto", "bf16-mixed", "bf16", "fp32"},
             "auto = from model.dtype and training.master_weights; bf16-mixed = bf16 compute, "
             "fp32 parameters and optimizer state; bf16 = parameters, gradients and AdamW state "
             "all bf16 (as HF model.to(bfloat16)); fp32 = everything fp32. Not auto: model.dtype "
             "and training.master_weights follow it; setting them to something else is an error"),
      boolean("training", "stochastic_rounding", "true",
              "bf16 parameters: AdamW's update is computed in fp32 and rounded to bf16 "
              "stochastically, so updates below bf16 resolution survive in expectation; false = "
              "round to nearest"),
      integer("training", "threads", "0", 0, 4096, "CPU intra-op threads; 0 = all cores"),
      integer("training", "eval_every", "0", 0, kMaxInt,
              "validation loss and perplexity every N steps (needs data.eval or data.eval_fraction); "
              "0 = off"),
      choice("training", "activation_checkpointing", "none", {"none", "glu", "full"},
             "glu = recompute each MLP's GLU product act(gate) * up in backward instead of keeping it "
             "(tokens x intermediate_size less per layer for one elementwise pass); full = keep only "
             "each decoder layer's input and recompute the layer in backward"),
      boolean("training", "cuda_graphs", "false",
              "capture the whole optimizer step (forward, backward, clipping, AdamW) as one CUDA graph "
              "after two eager steps and replay it: no per-kernel launch cost. One GPU (no sharding), "
              "training.device cuda; every batch has the same shape (always true for packed windows)"),
      integer("training", "eval_batches", "0", 0, kMaxInt,
              "micro-batches per evaluation; 0 = every evaluation window"),

      // -------------------------------------------------------------- kernels
      boolean("kernels", "rms_norm", "true", "fused RMSNorm"),
      boolean("kernels", "layer_norm", "true", "fused LayerNorm"),
      boolean("kernels", "rope", "true", "fused rotary embedding"),
      boolean("kernels", "swiglu", "true", "fused SwiGLU"),
      boolean("kernels", "geglu", "true", "fused GeGLU"),
      boolean("kernels", "cross_entropy", "false",
              "fused cross entropy on materialised logits (exclusive with fused_linear_cross_entropy)"),
      boolean("kernels", "fused_linear_cross_entropy", "true",
              "lm_head + cross entropy without materialising [tokens, vocab] logits"),
      boolean("kernels", "tuned_gemm", "false",
              "cuda: the linear layers' and the fused loss's matrix products through cuBLASLt, the "
              "algorithm of each shape chosen by timing at its first use (logged); results may then differ "
              "in the last bits from run to run"),
      boolean("kernels", "strict", "false", "a fallback to a slower backend is an error"),
      number("kernels", "flce_chunk_mb", "256", 1.0, 1048576.0,
             "fused linear cross entropy: memory budget (MiB) of one logits chunk"),
      choice("kernels", "flce_mode", "speed", {"speed", "lean"},
             "fused linear cross entropy on cuda: speed = token chunks + fp32 weight-grad buffer; "
             "lean = vocabulary blocks, two passes, no [V, H] fp32 buffer"),

      // ---------------------------------------------------------- parallelism
      integer("parallelism", "pipeline_parallel_degree", "1", 1, 1,
              "pipeline parallelism is not supported: must be 1"),
      integer("parallelism", "tensor_parallel_degree", "1", 1, 1,
              "tensor parallelism is not supported yet: must be 1"),
      integer("parallelism", "context_parallel_degree", "1", 1, 1,
              "context parallelism is not supported yet: must be 1"),
      integer("parallelism", "data_parallel_shard_degree", "-1", -1, kMaxInt,
              "FSDP-style sharding of parameters, gradients and optimizer state over this many "
              "ranks; -1 = all ranks (the only other value accepted is the world size)"),
      boolean("parallelism", "reshard_after_forward", "true",
              "free each layer's gathered parameters after its forward and gather them again for "
              "its backward (less memory, one more all-gather per layer)"),
      choice("parallelism", "reduce_dtype", "fp32", {"fp32", "bf16"},
             "dtype in which gradients are reduce-scattered across ranks (the gathered parameters "
             "are in model.dtype)"),
      choice("parallelism", "backend", "auto", {"auto", "nccl", "gloo"},
             "collective backend; auto = nccl on cuda, gloo on cpu"),
      number("parallelism", "timeout_s", "600", 1.0, 86400.0,
             "rendezvous and collective timeout: a rank that does not answer within it ends the "
             "job on every rank with an error"),

      // ----------------------------------------------------------- checkpoint
      text("checkpoint", "output_dir", "runs/default",
           "where step-N/ checkpoints, metrics.jsonl and train.log go"),
      integer("checkpoint", "every", "100", 0, kMaxInt, "save every N steps; 0 = only at the end"),
      integer("checkpoint", "keep_last", "2", 0, kMaxInt, "complete checkpoints kept; 0 = all"),
      text("checkpoint", "resume", "none",
           "none | auto (newest complete step-N/ in output_dir) | a step-N/ path"),
      boolean("checkpoint", "save_final", "true", "save after the last step"),

      // -------------------------------------------------------------- logging
      integer("logging", "every", "10", 1, kMaxInt, "log line every N steps (the first step too)"),
      number("logging", "peak_tflops", "0", 0.0, 1e6,
             "dense bf16 peak of one device in TFLOP/s for the mfu metric; 0 = detect (H100/H200 "
             "989, A100 312; unknown devices and cpu: no mfu)"),
      integer("logging", "profile_steps", "0", 0, kMaxInt,
              "profile this many optimizer steps (Kineto: CPU ops and CUDA kernels): a Chrome trace per "
              "rank in <output_dir>/profile/ and device time by kernel in the log; 0 = off"),
      integer("logging", "profile_first_step", "5", 1, kMaxInt,
              "first profiled step (after warm-up: allocator, cuBLAS and NCCL set-up)"),
      choice("logging", "level", "info", {"debug", "info", "warn", "error"}, "log level"),
      choice("logging", "progress_bar", "auto", {"auto", "on", "off"},
             "auto = when stdout is a terminal"),
      text("logging", "sample_prompt", "'ROMEO:'", "prompt of the text sample printed at the end"),
      integer("logging", "sample_tokens", "0", 0, 100000,
              "tokens to generate at the end; 0 = no sample"),
      number("logging", "sample_temperature", "0.8", 0.0, 100.0,
             "sampling temperature; 0 = greedy"),
      number("logging", "sample_top_p", "0.95", 0.0, 1.0, "nucleus sampling threshold"),
  };
}

}  // namespace

std::string KeySpec::describe_allowed() const {
  std::ostringstream out;
  auto bound = [](double v) {
    std::ostringstream s;
    if (v == static_cast<double>(static_cast<long long>(v))) {
      s << static_cast<long long>(v);
    } else {
      s << v;
    }
    return s.str();
  };
  switch (type) {
    case KeyType::integer:
      out << "an integer";
      if (min > -1e299 || max < 1e299) {
        if (min == max) {
          out << " equal to " << bound(min);
        } else if (max >= kMaxInt) {
          out << " >= " << bound(min);
        } else {
          out << " in [" << bound(min) << ", " << bound(max) << "]";
        }
      }
      break;
    case KeyType::number:
      out << "a number in [" << bound(min) << ", " << bound(max) << "]";
      break;
    case KeyType::boolean:
      out << "true or false";
      break;
    case KeyType::string:
      out << "a string";
      break;
    case KeyType::choice: {
      out << "one of: ";
      for (size_t i = 0; i < choices.size(); ++i) out << (i ? ", " : "") << choices[i];
      break;
    }
    case KeyType::string_list:
      out << "a list of strings";
      break;
  }
  if (nullable) out << " (or null)";
  return out.str();
}

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = {"model",       "lora",       "data",    "training",
                                                 "kernels",     "parallelism", "checkpoint", "logging"};
  return names;
}

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> keys = build_schema();
  return keys;
}

const KeySpec* find_key(const std::string& full_name) {
  for (const auto& key : schema()) {
    if (key.full_name() == full_name) return &key;
  }
  return nullptr;
}

namespace {
// Levenshtein distance, O(|a|·|b|): keys are short.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string closest_key(const std::string& full_name) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  const auto dot = full_name.find('.');
  const std::string leaf = dot == std::string::npos ? full_name : full_name.substr(dot + 1);
  for (const auto& key : schema()) {
    // Compare whole names, but also the leaf alone so that a key put in the
    // wrong section ("training.seq_len") finds its home ("data.seq_len").
    size_t distance = std::min(edit_distance(full_name, key.full_name()),
                               edit_distance(leaf, key.name) + 2);
    if (distance < best_distance) {
      best_distance = distance;
      best = key.full_name();
    }
  }
  return best;
}

std::string closest_name(const std::string& name, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& candidate : names) {
    const size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::string reference_yaml() {
  std::ostringstream out;
  out << "# liger-train configuration reference: every key, its default and what it does.\n"
         "# Generated by `liger-train --print-reference` from trainer/config_schema.cpp;\n"
         "# a test keeps this file and the schema identical. Any key may be overridden on\n"
         "# the command line: --set section.key=value\n";
  for (const auto& section : sections()) {
    out << "\n" << section << ":\n";
    for (const auto& key : schema()) {
      if (key.section != section) continue;
      out << "  # " << key.doc << "\n";
      out << "  #   " << key.describe_allowed() << "\n";
      out << "  " << key.name << ": " << key.default_yaml << "\n";
    }
  }
  return out.str();
}

}  // namespace liger::config
