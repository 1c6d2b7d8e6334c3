// The loss check of a convergence run (scripts/convergence.sh, through
// liger-compare --losses): two runs' loss curves compared step by step,
// against a fixed relative tolerance or against the rounding noise of the
// reference.
//
// Two fp32 runs whose arithmetic differs only in rounding follow the same loss
// curve for a while, then separate chaotically: their per-step relative loss
// difference grows from ~1e-7 to ~1e-2 however correct both are, so a fixed
// tolerance suits short runs only. The yardstick is a "noise" run: the
// reference trained again with only its rounding changed (the same global
// batch in twice as many micro-batches). With a the run under test, b the
// reference and c the noise run, the i-th logged step must satisfy
//
//   |a - b| / |b|  <=  limit(i) = max(rtol, noise_ratio * band(i))
//   band(i)        =  max over steps j <= i + lead_steps of |c - b| / |b|
//
// The band is the running maximum of the noise run's difference, looking
// lead_steps ahead: how far rounding alone moves the loss by then.
// - A running maximum, because two chaotic differences cross zero at unrelated
//   steps: a pointwise band would let one quiet step of the noise run fail a
//   correct run. The price: a single spike of the noise run widens the band
//   from lead_steps before it to the end.
// - Looking ahead, because the run under test changes more operations than
//   the noise run does, so its separation may start a few steps earlier: while
//   the drift grows (about x10 every 20-40 steps on configs/tiny.yaml) a lead
//   of a few steps is a factor of several.
// - The run under test gets no smoothing: one step beyond the limit fails.
// - rtol is the floor: while the noise stays below rtol / noise_ratio (short
//   runs, early steps) the check is the fixed tolerance. A systematic change
//   (a 5% larger learning rate) shows there, far above the early noise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace liger::trainer {

// One run's loss per optimizer step, in step order.
struct LossCurve {
  std::string source;  // where it was read from, for messages
  std::vector<int64_t> steps;
  std::vector<double> losses;
};

// The "step" and "loss" of every line of a metrics.jsonl (a loss written as
// null, i.e. not finite, reads as NaN and fails any comparison).
LossCurve read_loss_curve(const std::string& metrics_jsonl);

struct LossTolerance {
  double rtol = 1e-4;        // the floor, and the whole check without a noise run
  double noise_ratio = 3.0;  // how many times the noise band a step may differ by
  int64_t lead_steps = 10;   // how far ahead the band looks (logged steps)
};

struct LossStep {
  int64_t step = 0;
  double tested = 0.0, reference = 0.0;
  double noise = 0.0;             // the noise run's loss (NaN without one)
  double difference = 0.0;        // |tested - reference| / |reference|
  double noise_difference = 0.0;  // |noise - reference| / |reference| (0 without one)
  double band = 0.0;              // max of noise_difference up to lead_steps ahead
  double limit = 0.0;             // max(rtol, noise_ratio * band)
  bool within() const { return difference <= limit; }  // false for NaN
};

struct LossComparison {
  bool with_noise = false;
  LossTolerance tolerance;
  std::vector<LossStep> steps;
  size_t largest = 0;   // index of the step with the largest difference
  size_t tightest = 0;  // index of the step with the largest difference / limit
  bool ok = true;       // every step within its limit
  // With a noise run: the smallest noise_ratio this run passes with (rtol
  // unchanged), i.e. the largest difference / band over the steps beyond
  // rtol; 0 when every step is within rtol, infinity when a step beyond it
  // has no band or a NaN difference. How K is chosen (docs/convergence.md):
  // above this ratio of correct runs, below that of a perturbed one.
  double passing_ratio = 0.0;
};

// Compares `tested` with `reference` step by step; `noise` (may be null) is
// the reference's run with only its rounding changed. All curves must hold
// the same steps (a user error otherwise, naming the files).
LossComparison compare_loss_curves(const LossCurve& tested, const LossCurve& reference,
                                   const LossCurve* noise, const LossTolerance& tolerance);

// One line: the steps, first and final losses, the largest difference and,
// with a noise run, the tightest step against its band; ends with OK or
// DIVERGED.
std::string describe(const LossComparison& comparison);

// A gnuplot-ready table: step, tested, reference, noise, difference,
// noise_difference, band, limit (tab-separated, one header line).
void write_loss_table(const LossComparison& comparison, const std::string& path);

// The comparison's numbers and verdict as a JSON object.
void write_loss_summary(const LossComparison& comparison, const std::string& path);

}  // namespace liger::trainer
