// The memory estimate against what training really holds: on the CPU the
// peak bytes of live tensors (counted at the allocator) over two optimizer
// steps of a small Llama (and Qwen3, whose q/k norms keep more), for the
// precisions and recompute modes the memory plan chooses between, with and
// without gradient accumulation.
#include "tests/catch.h"
#include "tests/trainer/cpu_memory_counter.h"
#include "tests/trainer/training_fixture.h"
#include "models/transformer.h"
#include "trainer/memory_estimate.h"
#include "trainer/model_setup.h"
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <string>
#include <vector>

using namespace liger;

namespace {

struct Measured {
  double peak = 0;  // bytes of CPU tensors above what was live before the trainer was built
  trainer::MemoryEstimate estimate;
};

Measured measure(const std::vector<std::string>& shape, const std::vector<std::string>& overrides) {
  std::vector<std::string> all = shape;
  all.insert(all.end(), {"training.steps=2", "model.num_layers=4", "model.num_heads=4",
                         "model.num_kv_heads=2"});
  all.insert(all.end(), overrides.begin(), overrides.end());
  const config::TrainConfig c = testing::tiny_config(testing::fresh_dir("memory_estimate"), all);
  Measured out;
  testing::CpuMemoryCounter counter;
  const int64_t before = counter.current();
  {
    trainer::Trainer t(c);
    t.run();
    out.estimate = trainer::estimate_memory(t.model().config(), c, 1);
  }
  out.peak = static_cast<double>(counter.peak() - before);
  return out;
}

struct Case {
  const char* name;
  std::vector<std::string> overrides;
};

void check_cases(const std::vector<std::string>& shape, const std::vector<Case>& cases) {
  for (const Case& test : cases) {
    const Measured m = measure(shape, test.overrides);
    INFO(test.name << ": measured " << m.peak / (1 << 20) << " MiB, estimate "
                   << m.estimate.total() / (1 << 20) << " MiB (" << m.estimate.describe() << ")");
    CHECK(m.peak <= 1.10 * m.estimate.total());
    CHECK(m.peak >= 0.90 * m.estimate.total());
  }
}

}  // namespace

// 8 x 256 tokens through a narrow model: activations and the loss weigh most.
TEST_CASE("on the CPU the estimate is the measured peak to 10%: activations and recompute") {
  check_cases(
      {"model.hidden_size=128", "model.intermediate_size=512", "model.max_seq_len=256",
       "data.seq_len=256", "training.micro_batch_size=8"},
      {
          {"fp32, no checkpointing", {"training.precision=fp32"}},
          {"fp32, glu", {"training.precision=fp32", "training.activation_checkpointing=glu"}},
          {"fp32, full, 2 micro-batches",
           {"training.precision=fp32", "training.activation_checkpointing=full",
            "training.gradient_accumulation_steps=2"}},
          {"bf16, full, 2 micro-batches",
           {"training.precision=bf16", "training.activation_checkpointing=full",
            "training.gradient_accumulation_steps=2"}},
          {"bf16-mixed, no checkpointing, 2 micro-batches",
           {"training.precision=bf16-mixed", "training.gradient_accumulation_steps=2"}},
          {"Qwen3 (q/k norms, head_dim 64), fp32",
           {"model.preset=tiny_qwen3", "training.precision=fp32"}},
          {"Qwen3, fp32, kernels off",
           {"model.preset=tiny_qwen3", "training.precision=fp32", "kernels.rms_norm=false",
            "kernels.rope=false", "kernels.swiglu=false",
            "kernels.fused_linear_cross_entropy=false"}},
      });
}

// 8 x 256 tokens whose attention SDPA cannot mask (a sliding window, a
// softcap, documents): query chunks that keep the log-sum-exp, or with
// kernels.attention off the explicit path that keeps [heads, T, T]
// probabilities, which then weigh most.
TEST_CASE("on the CPU the estimate is the measured peak to 10%: windows, softcaps, documents") {
  check_cases(
      {"model.hidden_size=128", "model.intermediate_size=512", "model.max_seq_len=256",
       "data.seq_len=256", "training.micro_batch_size=8", "training.precision=fp32"},
      {
          {"window 64, chunks", {"model.sliding_window=64"}},
          {"window 64, explicit path", {"model.sliding_window=64", "kernels.attention=false"}},
          {"softcap, isolated documents, chunks",
           {"model.attn_softcap=20", "data.packing=isolated"}},
          {"softcap, isolated documents, explicit path",
           {"model.attn_softcap=20", "data.packing=isolated", "kernels.attention=false"}},
      });
}

// 2 x 32 tokens through a wider model: parameters, gradients and AdamW state
// weigh most, and whether the gradients live through the forwards shows.
TEST_CASE("on the CPU the estimate is the measured peak to 10%: weights, gradients, AdamW state") {
  check_cases({"model.hidden_size=256", "model.intermediate_size=1024", "model.max_seq_len=64",
               "data.seq_len=32", "training.micro_batch_size=2"},
              {
                  {"fp32", {"training.precision=fp32"}},
                  {"fp32, 2 micro-batches",
                   {"training.precision=fp32", "training.gradient_accumulation_steps=2"}},
                  {"bf16", {"training.precision=bf16"}},
                  {"bf16, 2 micro-batches",
                   {"training.precision=bf16", "training.gradient_accumulation_steps=2"}},
                  {"bf16-mixed", {"training.precision=bf16-mixed"}},
                  {"bf16-mixed, 2 micro-batches",
                   {"training.precision=bf16-mixed", "training.gradient_accumulation_steps=2"}},
              });
}

// DPO: the frozen copy of the weights that preference.reference = model
// keeps, and two rows per pair (the estimate's bound: here every sequence is
// exactly seq_len tokens, so it is also what the packing makes).
TEST_CASE("on the CPU the estimate is the measured peak to 10%: DPO's reference copy") {
  const std::vector<std::string> dpo = {
      "model.hidden_size=256",
      "model.intermediate_size=1024",
      "model.max_seq_len=1024",
      "data.seq_len=1024",
      "training.micro_batch_size=1",
      "training.precision=fp32",
      "training.objective=dpo",
      "data.train=[" + testing::source_dir() + "/data/samples/shakespeare_pairs_1024.jsonl]"};
  const Measured copy = measure(dpo, {"preference.reference=model"});
  const Measured none = measure(dpo, {"preference.reference=precomputed"});
  INFO("reference: model: measured " << copy.peak / (1 << 20) << " MiB, estimate "
                                     << copy.estimate.total() / (1 << 20) << " MiB ("
                                     << copy.estimate.describe() << ")");
  CHECK(copy.peak <= 1.10 * copy.estimate.total());
  CHECK(copy.peak >= 0.90 * copy.estimate.total());
  CHECK(copy.estimate.reference > 0);
  CHECK(none.estimate.reference == 0);
  // the copy is really there: the measured peaks differ by about its size
  CHECK(copy.peak - none.peak >= 0.8 * copy.estimate.reference);
}
