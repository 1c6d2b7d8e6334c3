// Every config key, declared once: its C++ type, name, default, allowed
// values and one line of documentation. From this table come
//   - the TrainConfig section structs and their defaults    (trainer/config.h)
//   - the schema: --print-reference, validation, messages   (trainer/config_schema.cpp)
//   - the parser that fills each field                      (trainer/config.cpp)
// so adding a key is adding one CONFIG_KEY line here (then regenerate
// configs/reference.yaml: liger-train --print-reference > configs/reference.yaml).
//
// This file is an X-macro table: it has no include guard, and each includer
// defines the three macros, includes it, and undefines them:
//
//   CONFIG_SECTION(name, Struct)                    a YAML section and the struct holding it
//   CONFIG_KEY(Type, name, default, allowed, doc)   one key of that section
//   CONFIG_END_SECTION()
//
// Type      int64_t, double, bool, std::string, Strings (a YAML list of
//           strings; one string is read as a list of one), std::optional<...>
//           (null allowed: "the preset's"), a mode enum or Resume
//           (trainer/config_enums.h: the enum's names are its choices).
// default   a C++ expression. Numbers and booleans appear in reference.yaml
//           exactly as written here; strings, lists and enums as YAML.
// allowed   any_value()          no limit beyond the type
//           range(min, max)      inclusive bounds of a number or integer
//           at_least(min)        a lower bound only
//           one_of("a", ...)     a string that must be one of these
// doc       one line for reference.yaml and error messages.
//
// Cross-key rules live in trainer/config.cpp (check_cross_key_rules,
// resolve_precision) and, for the ones that need the job, check_for_run.

#if !defined(CONFIG_SECTION) || !defined(CONFIG_KEY) || !defined(CONFIG_END_SECTION)
#error \
    "trainer/config_keys.h is an X-macro table: define CONFIG_SECTION, CONFIG_KEY and CONFIG_END_SECTION first"
#endif

// ------------------------------------------------------------------- model
CONFIG_SECTION(model, ModelSection)
CONFIG_KEY(std::string, preset, "tiny",
           one_of("tiny", "llama3_1b", "llama3_8b", "llama2_7b", "mistral_7b", "gemma_2b",
                  "gemma_7b", "gemma2_2b", "gemma2_9b", "qwen2_5_7b", "qwen3_1_7b", "qwen3_8b",
                  "tiny_qwen2", "tiny_qwen3", "mixtral_8x7b", "tiny_mixtral"),
           "architecture preset (family traits + dimensions); the keys below override single "
           "dimensions and traits")
CONFIG_KEY(std::string, hf_path, "", any_value(),
           "Hugging Face model folder (config.json + *.safetensors): architecture and weights come "
           "from it instead of model.preset; '' = train from the preset's random init")
CONFIG_KEY(Dtype, dtype, Dtype::fp32, any_value(),
           "compute dtype of activations (parameters stay fp32 when training.master_weights is "
           "on); HF's names float32, bfloat16, float16 are accepted too")
CONFIG_KEY(std::optional<int64_t>, vocab_size, std::nullopt, at_least(1),
           "vocabulary size; null = the preset's (tiny: the tokenizer's)")
CONFIG_KEY(std::optional<int64_t>, hidden_size, std::nullopt, at_least(1),
           "model width; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, intermediate_size, std::nullopt, at_least(1),
           "MLP width; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, num_layers, std::nullopt, range(1, 10000),
           "decoder layers; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, num_heads, std::nullopt, range(1, 10000),
           "query heads; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, num_kv_heads, std::nullopt, range(1, 10000),
           "key/value heads (GQA); must divide num_heads; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, head_dim, std::nullopt, range(2, 4096),
           "per-head width (even); null = hidden_size / num_heads or the preset's")
CONFIG_KEY(std::optional<double>, rope_theta, std::nullopt, range(1.0, 1e12),
           "RoPE base frequency; null = the preset's")
CONFIG_KEY(std::optional<double>, rms_norm_eps, std::nullopt, range(0.0, 1.0),
           "RMSNorm epsilon; null = the preset's")
CONFIG_KEY(std::optional<bool>, tie_embeddings, std::nullopt, any_value(),
           "share embedding and lm_head weights; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, max_seq_len, std::nullopt, at_least(1),
           "longest sequence the model is built for; null = the preset's")
CONFIG_KEY(std::optional<int64_t>, sliding_window, std::nullopt, at_least(0),
           "keys a query sees in sliding-window layers (self included); 0 = global attention; "
           "null = the preset's (mistral_7b, gemma2_*: 4096)")
CONFIG_KEY(std::optional<double>, attn_softcap, std::nullopt, range(0.0, 1e6),
           "attention-logit softcap c: scores <- c*tanh(scores/c); 0 = off; null = the preset's "
           "(gemma2_*: 50)")
CONFIG_KEY(std::optional<double>, final_softcap, std::nullopt, range(0.0, 1e6),
           "final-logit softcap applied by the loss; 0 = off; null = the preset's (gemma2_*: 30)")
CONFIG_KEY(
    std::optional<double>, query_pre_attn_scalar, std::nullopt, range(0.0, 1e9),
    "attention scale 1/sqrt(this); 0 = 1/sqrt(head_dim); null = the preset's (gemma2_*: 256)")
CONFIG_KEY(std::optional<bool>, output_router_logits, std::nullopt, any_value(),
           "MoE models: add the load-balancing loss (Switch form, all layers' routers together) "
           "to the training loss, as HF's output_router_logits, over the whole accumulated batch "
           "(with several micro-batches a forward without autograd counts the experts first); "
           "null = config.json's (else off)")
CONFIG_KEY(std::optional<double>, router_aux_loss_coef, std::nullopt, range(0.0, 1e6),
           "MoE models: weight of the load-balancing loss when output_router_logits is on; "
           "null = config.json's (else HF's 0.001)")
CONFIG_KEY(double, router_z_loss_coef, 0.0, range(0.0, 1e6),
           "MoE models: weight of the router z-loss (mean squared log-sum-exp of the router "
           "logits, ST-MoE); 0 = off")
CONFIG_KEY(double, init_std, 0.02, range(0.0, 10.0),
           "std of the normal init of every weight matrix (HF initializer_range)")
CONFIG_KEY(
    Adapter, adapter, Adapter::none, any_value(),
    "none = train every parameter; lora = freeze the base model (in model.dtype, no gradients or "
    "optimizer state) and train LoRA adapters (the lora: section)")
CONFIG_KEY(
    std::string, adapter_path, "", any_value(),
    "a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) to start the adapters "
    "from, to continue training or evaluate it; '' = fresh adapters (A random, B zero)")
CONFIG_END_SECTION()

// -------------------------------------------------------------------- lora
// Read when model.adapter is lora; the module names are checked against the
// model in trainer/adapter_setup.cpp.
CONFIG_SECTION(lora, LoraSection)
CONFIG_KEY(int64_t, rank, 16, range(1, 65536), "rank r of each adapter: A [r, in], B [out, r]")
CONFIG_KEY(std::optional<double>, alpha, std::nullopt, range(0.0, 1e9),
           "the adapters' output is scaled by alpha / rank; null = 2 x rank")
CONFIG_KEY(double, dropout, 0.0, range(0.0, 0.99), "dropout on the adapters' input during training")
CONFIG_KEY(Strings, target_modules, Strings{"all_linear"}, any_value(),
           "projections that get adapters (HF names): q_proj, k_proj, v_proj, o_proj, gate_proj, "
           "up_proj, down_proj, or all_linear (those seven)")
CONFIG_KEY(Strings, modules_to_save, Strings{}, any_value(),
           "modules trained in full beside the adapters, as PEFT's modules_to_save: embed_tokens, "
           "lm_head")
CONFIG_END_SECTION()

// -------------------------------------------------------------------- data
// The mode keys of this section stay strings: trainer hands them to
// data::DataSpec, whose own parser (data/) turns them into its enums.
CONFIG_SECTION(data, DataSection)
CONFIG_KEY(Strings, train, Strings{"data/samples/tinyshakespeare.txt"}, any_value(),
           "training files (.txt = one document; .jsonl = one document per line; .bin = token ids)")
CONFIG_KEY(
    std::string, format, "auto",
    one_of("auto", "text", "jsonl_text", "prompt_completion", "chat", "tokens_jsonl", "tokens_bin"),
    "reader; auto: .txt -> text, .bin -> tokens_bin, .jsonl -> by the fields of its first line "
    "(messages -> chat, input_ids -> tokens_jsonl, prompt+completion, text)")
CONFIG_KEY(std::string, chat_template, "auto",
           one_of("auto", "llama3", "mistral", "gemma", "chatml"),
           "chat format: how messages are rendered; auto = the family of the chat_template in the "
           "tokenizer's tokenizer_config.json, else from the tokenizer's special tokens")
CONFIG_KEY(std::string, token_dtype, "auto", one_of("auto", "uint16", "uint32"),
           "tokens_bin: width of a token id; auto = from an llm.c header (required without one)")
CONFIG_KEY(std::string, packing, "cross_document", one_of("cross_document", "isolated"),
           "cross_document: a window is one sequence; isolated: positions restart at each document "
           "and no label crosses into the next document")
CONFIG_KEY(
    std::string, tokenizer, "", any_value(),
    "tokenizer: a SentencePiece .model, a Hugging Face tokenizer.json (byte-level BPE), or a "
    "model folder holding one (special tokens and chat template from its tokenizer_config.json); "
    "'' = model.hf_path's folder, or without one the sample data/samples/shakespeare_bpe1024.model")
CONFIG_KEY(std::string, bos_token, "", any_value(),
           "BOS token by its spelling (e.g. '<|begin_of_text|>'); '' = the tokenizer's own")
CONFIG_KEY(std::string, eos_token, "", any_value(),
           "EOS token by its spelling (e.g. '<|end_of_text|>'); '' = the tokenizer's own")
CONFIG_KEY(int64_t, seq_len, 256, range(2, 1048576), "tokens per training sequence")
CONFIG_KEY(bool, add_bos, true, any_value(), "put BOS at the start of each document")
CONFIG_KEY(bool, add_eos, true, any_value(), "put EOS after each document (the packing separator)")
CONFIG_KEY(Strings, eval, Strings{}, any_value(),
           "evaluation files (read like data.train); exclusive with eval_fraction")
CONFIG_KEY(
    double, eval_fraction, 0, range(0.0, 0.5),
    "hold out this fraction of the training windows (the last ones) for evaluation; 0 = none")
CONFIG_END_SECTION()

// ---------------------------------------------------------------- training
CONFIG_SECTION(training, TrainingSection)
CONFIG_KEY(Device, device, Device::auto_, any_value(),
           "auto = cuda when a GPU is visible, else cpu")
CONFIG_KEY(int64_t, steps, 300, at_least(1), "optimizer steps")
CONFIG_KEY(int64_t, micro_batch_size, 8, range(1, 1048576), "sequences per forward/backward")
CONFIG_KEY(int64_t, gradient_accumulation_steps, 1, range(1, 1048576),
           "micro-batches per optimizer step (the loss is normalised over all of them)")
CONFIG_KEY(double, lr, 0.001, range(0.0, 10.0), "peak learning rate")
CONFIG_KEY(LrScheduleKind, lr_schedule, LrScheduleKind::cosine, any_value(), "decay after warmup")
CONFIG_KEY(int64_t, warmup_steps, 10, at_least(0), "linear warmup from 0 to lr")
CONFIG_KEY(double, min_lr_ratio, 0.1, range(0.0, 1.0),
           "floor of the linear/cosine decay, as a fraction of lr")
CONFIG_KEY(double, weight_decay, 0.1, range(0.0, 10.0),
           "AdamW decoupled weight decay (never applied to norms and biases)")
CONFIG_KEY(double, beta1, 0.9, range(0.0, 0.999999), "AdamW beta1")
CONFIG_KEY(double, beta2, 0.95, range(0.0, 0.999999999), "AdamW beta2")
CONFIG_KEY(double, eps, 1e-8, range(0.0, 1.0), "AdamW epsilon")
CONFIG_KEY(double, grad_clip, 1.0, range(0.0, 1e12), "max global grad norm; 0 = no clipping")
CONFIG_KEY(int64_t, seed, 1234, at_least(0), "seeds init, data order and sampling")
CONFIG_KEY(bool, master_weights, true, any_value(),
           "keep fp32 parameters and optimizer state when model.dtype is bf16/fp16")
CONFIG_KEY(Precision, precision, Precision::auto_, any_value(),
           "auto = from model.dtype and training.master_weights; bf16-mixed = bf16 compute, "
           "fp32 parameters and optimizer state; bf16 = parameters, gradients and AdamW state "
           "all bf16 (as HF model.to(bfloat16)); fp32 = everything fp32. Not auto: model.dtype "
           "and training.master_weights follow it; setting them to something else is an error. "
           "HF's names are accepted too: bfloat16 = bf16, float32 = fp32")
CONFIG_KEY(bool, stochastic_rounding, true, any_value(),
           "bf16 parameters: AdamW's update is computed in fp32 and rounded to bf16 "
           "stochastically, so updates below bf16 resolution survive in expectation; false = "
           "round to nearest")
CONFIG_KEY(int64_t, threads, 0, range(0, 4096), "CPU intra-op threads; 0 = all cores")
CONFIG_KEY(int64_t, eval_every, 0, at_least(0),
           "validation loss and perplexity every N steps (needs data.eval or data.eval_fraction); "
           "0 = off")
CONFIG_KEY(
    ActivationCheckpointing, activation_checkpointing, ActivationCheckpointing::none, any_value(),
    "glu = recompute each MLP's GLU product act(gate) * up in backward instead of keeping it "
    "(tokens x intermediate_size less per layer for one elementwise pass); full = keep only "
    "each decoder layer's input and recompute the layer in backward")
CONFIG_KEY(
    MemoryPlanMode, memory_plan, MemoryPlanMode::off, any_value(),
    "auto = choose training.precision and training.activation_checkpointing to fit the GPU: "
    "the first of bf16-mixed/none, bf16-mixed/glu, bf16-mixed/full, bf16/none, bf16/glu, bf16/full "
    "(fp32 master weights first, then the least recompute) whose memory estimate fits "
    "training.memory_budget_gib; the start-up log and --dry-run say what it chose and why (on the "
    "CPU: fp32, none). Leave training.precision, training.activation_checkpointing, model.dtype "
    "and "
    "training.master_weights unset with auto. off = those keys as written")
CONFIG_KEY(
    double, memory_budget_gib, 0, range(0.0, 1e6),
    "training.memory_plan: auto: GiB per GPU the plan must fit; 0 = 95% of the GPU's memory (of an "
    "80 GiB GPU when none is visible, e.g. --dry-run on a machine without one)")
CONFIG_KEY(
    bool, cuda_graphs, false, any_value(),
    "capture the whole optimizer step (forward, backward, clipping, AdamW) as one CUDA graph "
    "after two eager steps and replay it: no per-kernel launch cost. One GPU (no sharding), "
    "training.device cuda; every batch has the same shape (always true for packed windows)")
CONFIG_KEY(int64_t, eval_batches, 0, at_least(0),
           "micro-batches per evaluation; 0 = every evaluation window")
CONFIG_KEY(Objective, objective, Objective::sft, any_value(),
           "sft = next-token loss on data.train; dpo, orpo, simpo = preference optimisation on "
           "prompt/chosen/rejected JSONL pairs (section preference:, docs/preference.md)")
CONFIG_END_SECTION()

// -------------------------------------------------------------- preference
CONFIG_SECTION(preference, PreferenceSection)
CONFIG_KEY(double, beta, 0.1, range(0.0, 1000.0),
           "DPO / SimPO temperature of the reward margin (> 0 for dpo and simpo)")
CONFIG_KEY(DpoLoss, loss_type, DpoLoss::sigmoid, any_value(),
           "DPO loss: sigmoid (summed log-probs), ipo (length-averaged), hinge")
CONFIG_KEY(double, label_smoothing, 0.0, range(0.0, 0.5),
           "DPO sigmoid and SimPO: the assumed probability that a pair's labels are flipped")
CONFIG_KEY(double, orpo_alpha, 0.1, range(0.0, 1000.0),
           "ORPO: weight of the odds-ratio term next to the NLL on chosen")
CONFIG_KEY(double, simpo_gamma, 0.5, range(0.0, 1000.0), "SimPO: target reward margin")
CONFIG_KEY(ReferenceSource, reference, ReferenceSource::model, any_value(),
           "DPO reference log-probs: model = the frozen starting weights (LoRA: adapters off); "
           "precomputed = one pass at start, saved as reference_logps.bin in checkpoint.output_dir")
CONFIG_KEY(double, nll_weight, 0.0, range(0.0, 1000.0),
           "weight of an added NLL (SFT) term on the chosen responses, per chosen token")
CONFIG_END_SECTION()

// ----------------------------------------------------------------- kernels
CONFIG_SECTION(kernels, KernelsSection)
CONFIG_KEY(bool, rms_norm, true, any_value(), "fused RMSNorm")
CONFIG_KEY(bool, layer_norm, true, any_value(), "fused LayerNorm")
CONFIG_KEY(bool, rope, true, any_value(), "fused rotary embedding")
CONFIG_KEY(bool, swiglu, true, any_value(), "fused SwiGLU")
CONFIG_KEY(bool, geglu, true, any_value(), "fused GeGLU")
CONFIG_KEY(bool, cross_entropy, false, any_value(),
           "fused cross entropy on materialised logits (exclusive with fused_linear_cross_entropy)")
CONFIG_KEY(bool, fused_linear_cross_entropy, true, any_value(),
           "lm_head + cross entropy without materialising [tokens, vocab] logits")
CONFIG_KEY(bool, moe, true, any_value(),
           "MoE block with routing on the device and grouped GEMMs, SwiGLU recomputed in "
           "backward; false = HF's loop over experts")
CONFIG_KEY(bool, attention, true, any_value(),
           "sliding windows, softcaps and data.packing: isolated in exact query chunks (memory "
           "O(T)); false = the reference's explicit path, which keeps [heads, T, T] "
           "probabilities")
CONFIG_KEY(PlainAttention, plain_attention, PlainAttention::measured, any_value(),
           "cuda: who serves attention without a window, softcap or documents (bf16/fp16, "
           "head_dim 64/128/256): sdpa = ATen's SDPA (cuDNN / flash), liger = our flash kernel, "
           "measured = a fixed rule from H100 measurements: ours for causal head_dim 64 from "
           "4096 tokens on compute capability 9.0, else SDPA (docs/kernels.md)")
CONFIG_KEY(
    bool, tuned_gemm, false, any_value(),
    "cuda: the linear layers' and the fused loss's matrix products through cuBLASLt, the "
    "algorithm of each shape chosen by timing at its first use (logged); results may then differ "
    "in the last bits from run to run")
CONFIG_KEY(bool, strict, false, any_value(), "a fallback to a slower backend is an error")
CONFIG_KEY(double, flce_chunk_mb, 256, range(1.0, 1048576.0),
           "fused linear cross entropy: memory budget (MiB) of one logits chunk")
CONFIG_KEY(FlceMode, flce_mode, FlceMode::speed, any_value(),
           "fused linear cross entropy on cuda: speed = token chunks + fp32 weight-grad buffer; "
           "lean = vocabulary blocks, two passes, no [V, H] fp32 buffer")
CONFIG_END_SECTION()

// ------------------------------------------------------------- parallelism
CONFIG_SECTION(parallelism, ParallelismSection)
CONFIG_KEY(int64_t, pipeline_parallel_degree, 1, range(1, 1),
           "pipeline parallelism is not supported: must be 1")
CONFIG_KEY(int64_t, tensor_parallel_degree, 1, range(1, 1),
           "tensor parallelism is not supported yet: must be 1")
CONFIG_KEY(int64_t, context_parallel_degree, 1, range(1, 1),
           "context parallelism is not supported yet: must be 1")
CONFIG_KEY(int64_t, data_parallel_shard_degree, -1, at_least(-1),
           "FSDP-style sharding of parameters, gradients and optimizer state over this many "
           "ranks; -1 = all ranks (the only other value accepted is the world size)")
CONFIG_KEY(bool, reshard_after_forward, true, any_value(),
           "free each layer's gathered parameters after its forward and gather them again for "
           "its backward (less memory, one more all-gather per layer)")
CONFIG_KEY(ReduceDtype, reduce_dtype, ReduceDtype::fp32, any_value(),
           "dtype in which gradients are reduce-scattered across ranks (the gathered parameters "
           "are in model.dtype)")
CONFIG_KEY(Backend, backend, Backend::auto_, any_value(),
           "collective backend; auto = nccl on cuda, gloo on cpu")
CONFIG_KEY(double, timeout_s, 600, range(1.0, 86400.0),
           "rendezvous and collective timeout: a rank that does not answer within it ends the "
           "job on every rank with an error")
CONFIG_END_SECTION()

// -------------------------------------------------------------- checkpoint
CONFIG_SECTION(checkpoint, CheckpointSection)
CONFIG_KEY(std::string, output_dir, "runs/default", any_value(),
           "where step-N/ checkpoints, metrics.jsonl and train.log go")
CONFIG_KEY(int64_t, every, 100, at_least(0), "save every N steps; 0 = only at the end")
CONFIG_KEY(int64_t, keep_last, 2, at_least(0), "complete checkpoints kept; 0 = all")
CONFIG_KEY(Resume, resume, Resume{}, any_value(),
           "none | auto (newest complete step-N/ in output_dir) | a step-N/ path")
CONFIG_KEY(bool, save_final, true, any_value(), "save after the last step")
CONFIG_END_SECTION()

// ----------------------------------------------------------------- logging
CONFIG_SECTION(logging, LoggingSection)
CONFIG_KEY(int64_t, every, 10, at_least(1), "log line every N steps (the first step too)")
CONFIG_KEY(double, peak_tflops, 0, range(0.0, 1e6),
           "dense bf16 peak of one device in TFLOP/s for the mfu metric; 0 = detect (H100/H200 "
           "989, A100 312; unknown devices and cpu: no mfu)")
CONFIG_KEY(
    int64_t, profile_steps, 0, at_least(0),
    "profile this many optimizer steps (Kineto: CPU ops and CUDA kernels): a Chrome trace per "
    "rank in <output_dir>/profile/ and device time by kernel in the log; 0 = off")
CONFIG_KEY(int64_t, profile_first_step, 5, at_least(1),
           "first profiled step (after warm-up: allocator, cuBLAS and NCCL set-up)")
CONFIG_KEY(LogLevel, level, LogLevel::info, any_value(), "log level")
CONFIG_KEY(ProgressBar, progress_bar, ProgressBar::auto_, any_value(),
           "auto = when stdout is a terminal")
CONFIG_KEY(
    bool, tensorboard, false, any_value(),
    "also write TensorBoard events (rank 0): every number of metrics.jsonl as train/<key> or "
    "eval/<name>, the resolved config and the kernel table as text; a new "
    "events.out.tfevents.* in checkpoint.output_dir per run")
CONFIG_KEY(std::string, sample_prompt, "ROMEO:", any_value(),
           "prompt of the text sample printed at the end")
CONFIG_KEY(int64_t, sample_tokens, 0, range(0, 100000),
           "tokens to generate at the end; 0 = no sample")
CONFIG_KEY(double, sample_temperature, 0.8, range(0.0, 100.0), "sampling temperature; 0 = greedy")
CONFIG_KEY(double, sample_top_p, 0.95, range(0.0, 1.0), "nucleus sampling threshold")
CONFIG_END_SECTION()
