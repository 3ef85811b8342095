// Optimisation on the flat parameter buffer: AdamW, gradient clipping by global norm, an
// exponential moving average of the weights, and the learning-rate schedule. Each update is
// one kernel over the whole buffer (DESIGN.md: parameters in one flat buffer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/parameters.h"
#include "kernels/optim_math.h"
#include "kernels/shapes.h"

namespace ddpm {

struct AdamWConfig {
  double lr = 2e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW); 0 gives Adam
};

class Ema;

class AdamW {
 public:
  AdamW(const ParameterStore& store, const AdamWConfig& config);
  // One update with learning rate `lr` (the schedule's value for this step); with `ema`,
  // its update number `ema_index` in the same pass over the buffer (Ema::update's result).
  // Not while a gated step is unresolved.
  void step(double lr, Ema* ema = nullptr, int64_t ema_index = 0);

  // The outcome of a step, computed where the gradients live without the host waiting:
  //   an f64 tensor [per_sample (n)..., loss, grad_norm, clip_scale, applied, bc1, bc2]
  // (the last six a kernels/shapes.h StepGate: clip to max_norm when > 0; apply only if the
  // loss and the norm are finite and no earlier refusal halted training; bias corrections
  // for the count of applied steps, kept on the device beside the moments, this step
  // included if applied). per_sample (n) may be undefined (n = 0); loss is a scalar; both
  // f32 or f64 on the parameters' device. One copy brings all of it to the host.
  // refusal Halt: once a step is refused, every later gate refuses too (kernels/optim_math.h).
  Tensor step_summary(const Tensor& per_sample, const Tensor& loss, double max_norm,
                      Refusal refusal = Refusal::Skip);
  // The update, gated and clipped by a step summary that may not have been computed yet: it
  // is read where the parameters live, in the same pass, so the host queues the update
  // without waiting for the gradient norm, nor for the verdict on the step before. Each
  // gated step is resolved, in order, once the host has read its gate back:
  // resolve_gated_step() then advances steps_taken() if the gate applied it (and checks that
  // the host's count gives the gate's bias corrections).
  // With `inputs` (a StepInputs in device memory, kernels/step_inputs.h), the kernel reads
  // the learning rate and the EMA decay from there instead of taking lr and ema_index's
  // decay as arguments: what a captured step (a CUDA graph) needs.
  void gated_step(double lr, const Tensor& summary, Ema* ema = nullptr, int64_t ema_index = 0,
                  const StepInputs* inputs = nullptr);
  // A gated step queued by replaying a captured one: counted for resolve_gated_step.
  void count_replayed_gate() { ++unresolved_; }
  // Whether the device's counters wait for a refresh (step() or set_steps_taken() since the
  // last step_summary, which uploads them): a replayed step could not.
  bool counters_stale() const { return stale_; }
  void resolve_gated_step(const StepGate& gate);
  int64_t unresolved_steps() const { return unresolved_; }

  // Updates applied (not refused): t in the bias corrections 1 - beta^t.
  int64_t steps_taken() const { return static_cast<int64_t>(counters_.steps); }
  // For checkpoints: sets the count (beta^t recomputed by t multiplications, as the steps
  // would have) and clears a halt.
  void set_steps_taken(int64_t t);
  // Optimiser state, for checkpoints: first and second moments (flat, like the parameters).
  Tensor first_moment() const { return m_; }
  Tensor second_moment() const { return v_; }

 private:
  AdamWParams params(double lr) const;  // the constants of the next update
  void launch(const AdamWParams& p, Ema* ema, int64_t ema_index, const StepGate* gate,
              const StepInputs* inputs = nullptr);

  const ParameterStore& store_;
  AdamWConfig config_;
  Tensor m_, v_;
  // The applied steps as the host knows them (resolved), and as the gates count them, on the
  // parameters' device (ahead by the unresolved steps). step() and set_steps_taken() change
  // the host's; the device's is then refreshed before the next gate (stale_).
  StepCounters counters_;
  Tensor device_counters_;  // f64 (kStepCounterDoubles)
  bool stale_ = true;
  int64_t unresolved_ = 0;
};

// Returns the global L2 norm of all gradients; if it exceeds max_norm (> 0), scales every
// gradient by max_norm / norm (one pass). max_norm <= 0: measure only. Reads the norm back:
// on a GPU the host waits; a training step uses AdamW::step_summary and gated_step instead.
double clip_grad_norm(const ParameterStore& store, double max_norm);

// The gate at the end of a summary read back to the host (step_summary's layout).
StepGate summary_gate(const std::vector<double>& summary);

// The EMA weights: a second flat buffer, updated after each optimiser step. With warmup, the
// decay at update k (0-based) is min(decay, (1 + k) / (10 + k)), so a short run's average
// is not dominated by the initial weights (0.99^60 = 0.55 of them after 60 steps otherwise).
class Ema {
 public:
  Ema(const ParameterStore& store, double decay, bool warmup = false);
  void update(int64_t k);  // k: the index of this update (the optimiser step)
  // The rate 1 - decay update k uses, rounded from the double (kernels/optim_math.h says why
  // the rate travels and not the decay).
  float rate_at(int64_t k) const;
  Tensor weights() const { return shadow_; }  // flat, same layout as the parameters
  double decay() const { return decay_; }

 private:
  const ParameterStore& store_;
  double decay_;
  bool warmup_;
  Tensor shadow_;
};

// Copies `src` (a flat buffer of the store's layout) into the parameters, and back.
void load_flat(const ParameterStore& store, const Tensor& src);

// Linear warmup over `warmup` steps to `base`, then constant or cosine decay to 0 at `total`.
enum class LrDecay { Constant, Cosine };
double learning_rate(int64_t step, double base, int64_t warmup, int64_t total, LrDecay decay);
LrDecay parse_lr_decay(const std::string& name);  // "constant" | "cosine"

}  // namespace ddpm
