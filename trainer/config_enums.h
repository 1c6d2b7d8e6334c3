// The modes a config key can take, as enums, each with the one table of its
// YAML names. The parser reads these names (config.cpp), --print-reference
// lists them (config_schema.cpp) and messages print them (operator<< below),
// so a mode is spelled in one place. Past the parser the trainer compares
// enums, never strings. Torch-free.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

namespace liger::config {

// One mode and its spelling in YAML.
template <typename Enum>
struct EnumName {
  Enum value;
  const char* name;
};

// Specialised for every mode enum below with
//   static constexpr EnumName<Enum> names[] = {...};  (in the order reference.yaml lists them)
template <typename Enum>
struct EnumNames {};

// Specialised for a mode enum that also accepts other spellings on input (the
// names HF users type: "bfloat16" for bf16), with
//   static constexpr EnumName<Enum> aliases[] = {...};
// Messages, logs and reference.yaml use the names above; only the parser reads these.
template <typename Enum>
struct EnumAliases {};

// model.dtype: the dtype activations are computed in.
enum class Dtype { fp32, bf16, fp16 };
template <>
struct EnumNames<Dtype> {
  static constexpr EnumName<Dtype> names[] = {
      {Dtype::fp32, "fp32"}, {Dtype::bf16, "bf16"}, {Dtype::fp16, "fp16"}};
};
template <>
struct EnumAliases<Dtype> {
  static constexpr EnumName<Dtype> aliases[] = {
      {Dtype::fp32, "float32"}, {Dtype::bf16, "bfloat16"}, {Dtype::fp16, "float16"}};
};

// training.device.
enum class Device { auto_, cpu, cuda };
template <>
struct EnumNames<Device> {
  static constexpr EnumName<Device> names[] = {
      {Device::auto_, "auto"}, {Device::cpu, "cpu"}, {Device::cuda, "cuda"}};
};

// model.adapter: train every parameter, or freeze the base and train LoRA adapters.
enum class Adapter { none, lora };
template <>
struct EnumNames<Adapter> {
  static constexpr EnumName<Adapter> names[] = {{Adapter::none, "none"}, {Adapter::lora, "lora"}};
};

// training.lr_schedule: the decay after warmup.
enum class LrScheduleKind { constant, linear, cosine };
template <>
struct EnumNames<LrScheduleKind> {
  static constexpr EnumName<LrScheduleKind> names[] = {{LrScheduleKind::constant, "constant"},
                                                       {LrScheduleKind::linear, "linear"},
                                                       {LrScheduleKind::cosine, "cosine"}};
};

// training.precision: parameter and compute dtypes together (auto = from
// model.dtype and training.master_weights).
enum class Precision { auto_, bf16_mixed, bf16, fp32 };
template <>
struct EnumNames<Precision> {
  static constexpr EnumName<Precision> names[] = {{Precision::auto_, "auto"},
                                                  {Precision::bf16_mixed, "bf16-mixed"},
                                                  {Precision::bf16, "bf16"},
                                                  {Precision::fp32, "fp32"}};
};
template <>
struct EnumAliases<Precision> {
  static constexpr EnumName<Precision> aliases[] = {{Precision::bf16, "bfloat16"},
                                                    {Precision::fp32, "float32"}};
};

// training.activation_checkpointing: what backward recomputes.
enum class ActivationCheckpointing { none, glu, full };
template <>
struct EnumNames<ActivationCheckpointing> {
  static constexpr EnumName<ActivationCheckpointing> names[] = {
      {ActivationCheckpointing::none, "none"},
      {ActivationCheckpointing::glu, "glu"},
      {ActivationCheckpointing::full, "full"}};
};

// training.memory_plan: off = training.precision and
// training.activation_checkpointing as written; auto = chosen to fit the GPU
// (trainer/memory_plan.h).
enum class MemoryPlanMode { off, auto_ };
template <>
struct EnumNames<MemoryPlanMode> {
  static constexpr EnumName<MemoryPlanMode> names[] = {{MemoryPlanMode::off, "off"},
                                                       {MemoryPlanMode::auto_, "auto"}};
};

// kernels.flce_mode: how the fused linear cross entropy splits its work on cuda.
enum class FlceMode { speed, lean };
template <>
struct EnumNames<FlceMode> {
  static constexpr EnumName<FlceMode> names[] = {{FlceMode::speed, "speed"},
                                                 {FlceMode::lean, "lean"}};
};

// kernels.plain_attention: who serves attention without a window, softcap or
// documents on cuda (kernels::PlainAttention).
enum class PlainAttention { measured, sdpa, liger };
template <>
struct EnumNames<PlainAttention> {
  static constexpr EnumName<PlainAttention> names[] = {{PlainAttention::measured, "measured"},
                                                       {PlainAttention::sdpa, "sdpa"},
                                                       {PlainAttention::liger, "liger"}};
};

// training.objective: supervised fine-tuning, or a preference objective on
// chosen/rejected pairs (docs/preference.md).
enum class Objective { sft, dpo, orpo, simpo };
template <>
struct EnumNames<Objective> {
  static constexpr EnumName<Objective> names[] = {{Objective::sft, "sft"},
                                                  {Objective::dpo, "dpo"},
                                                  {Objective::orpo, "orpo"},
                                                  {Objective::simpo, "simpo"}};
};

// preference.loss_type: DPO's loss on the pair's reward margin.
enum class DpoLoss { sigmoid, ipo, hinge };
template <>
struct EnumNames<DpoLoss> {
  static constexpr EnumName<DpoLoss> names[] = {
      {DpoLoss::sigmoid, "sigmoid"}, {DpoLoss::ipo, "ipo"}, {DpoLoss::hinge, "hinge"}};
};

// preference.reference: where DPO's reference log-probs come from.
enum class ReferenceSource { model, precomputed };
template <>
struct EnumNames<ReferenceSource> {
  static constexpr EnumName<ReferenceSource> names[] = {
      {ReferenceSource::model, "model"}, {ReferenceSource::precomputed, "precomputed"}};
};

// parallelism.reduce_dtype: the dtype gradients are reduce-scattered in.
enum class ReduceDtype { fp32, bf16 };
template <>
struct EnumNames<ReduceDtype> {
  static constexpr EnumName<ReduceDtype> names[] = {{ReduceDtype::fp32, "fp32"},
                                                    {ReduceDtype::bf16, "bf16"}};
};

// parallelism.backend: the collective library (auto = nccl on cuda, gloo on cpu).
enum class Backend { auto_, nccl, gloo };
template <>
struct EnumNames<Backend> {
  static constexpr EnumName<Backend> names[] = {
      {Backend::auto_, "auto"}, {Backend::nccl, "nccl"}, {Backend::gloo, "gloo"}};
};

// checkpoint.resume: none, auto (the newest complete checkpoint in
// checkpoint.output_dir) or any other text: the path of a step-N/ folder.
enum class ResumeMode { none, auto_, path };
template <>
struct EnumNames<ResumeMode> {
  static constexpr EnumName<ResumeMode> names[] = {{ResumeMode::none, "none"},
                                                   {ResumeMode::auto_, "auto"}};
};
struct Resume {
  ResumeMode mode = ResumeMode::none;
  std::string path;  // ResumeMode::path: the step-N/ folder

  // "none" (or ""), "auto", else a path.
  static Resume from_text(const std::string& text);
  // The YAML text: none, auto or the path.
  std::string text() const;
  bool operator==(const Resume& other) const { return mode == other.mode && path == other.path; }
};

// logging.level.
enum class LogLevel { debug, info, warn, error };
template <>
struct EnumNames<LogLevel> {
  static constexpr EnumName<LogLevel> names[] = {{LogLevel::debug, "debug"},
                                                 {LogLevel::info, "info"},
                                                 {LogLevel::warn, "warn"},
                                                 {LogLevel::error, "error"}};
};

// logging.progress_bar (auto = when stdout is a terminal).
enum class ProgressBar { auto_, on, off };
template <>
struct EnumNames<ProgressBar> {
  static constexpr EnumName<ProgressBar> names[] = {
      {ProgressBar::auto_, "auto"}, {ProgressBar::on, "on"}, {ProgressBar::off, "off"}};
};

// Whether Enum is a mode enum with a name table.
template <typename Enum, typename = void>
struct has_enum_names : std::false_type {};
template <typename Enum>
struct has_enum_names<Enum, std::void_t<decltype(EnumNames<Enum>::names)>> : std::true_type {};
template <typename Enum, typename = void>
struct has_enum_aliases : std::false_type {};
template <typename Enum>
struct has_enum_aliases<Enum, std::void_t<decltype(EnumAliases<Enum>::aliases)>> : std::true_type {
};

// The YAML name of `value` ("bf16-mixed" for Precision::bf16_mixed); "?" for
// a value outside the table (a cast integer).
template <typename Enum>
const char* name_of(Enum value) {
  for (const auto& entry : EnumNames<Enum>::names) {
    if (entry.value == value) return entry.name;
  }
  return "?";
}

// The value named `name` (or one of its aliases), or nullopt when no value has that name.
template <typename Enum>
std::optional<Enum> enum_from_name(const std::string& name) {
  for (const auto& entry : EnumNames<Enum>::names) {
    if (name == entry.name) return entry.value;
  }
  if constexpr (has_enum_aliases<Enum>::value) {
    for (const auto& entry : EnumAliases<Enum>::aliases) {
      if (name == entry.name) return entry.value;
    }
  }
  return std::nullopt;
}

// Every name, in table order.
template <typename Enum>
std::vector<std::string> enum_names() {
  std::vector<std::string> names;
  for (const auto& entry : EnumNames<Enum>::names) names.emplace_back(entry.name);
  return names;
}

// Every spelling the parser accepts: the names, then the aliases.
template <typename Enum>
std::vector<std::string> enum_input_names() {
  std::vector<std::string> names = enum_names<Enum>();
  if constexpr (has_enum_aliases<Enum>::value) {
    for (const auto& entry : EnumAliases<Enum>::aliases) names.emplace_back(entry.name);
  }
  return names;
}

// Messages and logs print a mode by its YAML name.
template <typename Enum, typename = std::enable_if_t<has_enum_names<Enum>::value>>
std::ostream& operator<<(std::ostream& out, Enum value) {
  return out << name_of(value);
}
inline std::ostream& operator<<(std::ostream& out, const Resume& resume) {
  return out << resume.text();
}

inline Resume Resume::from_text(const std::string& text) {
  if (text.empty()) return {};
  if (const auto mode = enum_from_name<ResumeMode>(text)) return {*mode, ""};
  return {ResumeMode::path, text};
}

inline std::string Resume::text() const {
  return mode == ResumeMode::path ? path : name_of(mode);
}

}  // namespace liger::config
