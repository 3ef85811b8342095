// Optimisation on the flat parameter buffer: AdamW, gradient clipping by global norm, an
// exponential moving average of the weights, and the learning-rate schedule. Each update is
// one kernel over the whole buffer (DESIGN.md: parameters in one flat buffer).
#pragma once

#include <cstdint>
#include <string>

#include "engine/parameters.h"
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
  void step(double lr, Ema* ema = nullptr, int64_t ema_index = 0);
  // The same update, gated and clipped by a step summary (step_summary below) that may not
  // have been computed yet: it is read where the parameters live, in the same pass, so the
  // host queues the update without waiting for the gradient norm. The step is update number
  // steps_taken() + 1 if the gate applies it; the caller, once it has read the summary back,
  // calls count_applied_step() exactly then.
  void gated_step(double lr, const Tensor& summary, Ema* ema = nullptr, int64_t ema_index = 0);
  void count_applied_step() { ++t_; }
  int64_t steps_taken() const { return t_; }
  // Optimiser state, for checkpoints: first and second moments (flat, like the parameters).
  Tensor first_moment() const { return m_; }
  Tensor second_moment() const { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  AdamWParams params(double lr, int64_t t) const;  // the constants of update number t
  void launch(const AdamWParams& p, Ema* ema, int64_t ema_index, const StepGate* gate);

  const ParameterStore& store_;
  AdamWConfig config_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

// Returns the global L2 norm of all gradients; if it exceeds max_norm (> 0), scales every
// gradient by max_norm / norm (one pass). max_norm <= 0: measure only. Reads the norm back:
// on a GPU the host waits; a training step uses step_summary and gated_step instead.
double clip_grad_norm(const ParameterStore& store, double max_norm);

// The outcome of a step, computed where the gradients live without the host waiting:
//   an f64 tensor [per_sample (n)..., loss, grad_norm, clip_scale, applied]
// (the last four a kernels/shapes.h StepGate: clip to max_norm when > 0, apply only if the
// loss and the norm are finite). per_sample (n) may be undefined (n = 0); loss is a scalar;
// both f32 or f64 on the parameters' device. One copy brings all of it to the host.
Tensor step_summary(const ParameterStore& store, const Tensor& per_sample, const Tensor& loss,
                    double max_norm);
// The gate at the end of a summary read back to the host (step_summary's layout).
StepGate summary_gate(const std::vector<double>& summary);

// The EMA weights: a second flat buffer, updated after each optimiser step. With warmup, the
// decay at update k (0-based) is min(decay, (1 + k) / (10 + k)), so a short run's average
// is not dominated by the initial weights (0.99^60 = 0.55 of them after 60 steps otherwise).
class Ema {
 public:
  Ema(const ParameterStore& store, double decay, bool warmup = false);
  void update(int64_t k);  // k: the index of this update (the optimiser step)
  float decay_at(int64_t k) const;  // the decay update k uses
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
