// The DDPM training step, shared by every model: draw timesteps, draw noise, corrupt, predict,
// weight the loss, backpropagate, clip, update, average.
//
//   t      ~ timestep sampler (Philox stream kTimestepStream + step)
//   eps    ~ N(0, I)          (Philox stream kNoiseStream + step; element i of the batch)
//   x_t    = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
//   loss   = mean_n  w_t(n) * importance(n) * mse(model(x_t, t), target(x0, eps))
//   g      = clip(grad, grad_clip) by global norm; AdamW step at the scheduled lr; EMA update
// The corruption and the loss run either fused (default: diffusion_corrupt and
// diffusion_loss_fused, eps regenerated in-kernel, the loss and d(loss)/d(pred) in one pass)
// or unfused ("fused_loss": false: randn, make_x_t, target_from, mse_per_sample, mul, sum on
// the tape, the chain a framework runs). Both give the same loss and gradient up to rounding.
// Every random draw is a pure function of (seed, stream, index), so a run is reproducible
// and a resumed run continues exactly.
#pragma once

#include <memory>
#include <optional>

#include "engine/optim.h"
#include "engine/parameters.h"
#include "models/config_reader.h"
#include "models/ddpm/losses.h"
#include "models/ddpm/sampler.h"
#include "models/ddpm/schedule.h"
#include "models/ddpm/timestep_sampler.h"

namespace ddpm {

struct TrainerConfig {
  ScheduleConfig schedule;
  Target target = Target::Epsilon;
  LossConfig loss;
  TimestepSamplerKind timestep_sampler = TimestepSamplerKind::Uniform;
  AdamWConfig adam;
  int64_t warmup = 0;
  LrDecay lr_decay = LrDecay::Constant;
  int64_t steps = 1000;
  double grad_clip = 1.0;  // <= 0: no clipping
  double ema_decay = 0.0;  // 0: no EMA
  bool ema_warmup = false;  // decay min(ema_decay, (1+k)/(10+k)) at step k
  uint64_t seed = 0;
  bool fused_loss = true;
  // A step whose loss or gradient norm is NaN or infinite is never applied (no AdamW, EMA or
  // importance-history update); the caller then stops the run, or, with skip, goes on.
  bool skip_nonfinite = false;
};

// Reads the recipe keys (schedule, T, beta_start, beta_end, target, loss, hybrid_lambda,
// vlb_clamp, timestep_sampler, lr, beta1, beta2, adam_eps, weight_decay, warmup, lr_decay,
// steps, grad_clip, ema_decay, ema_warmup, seed, fused_loss, nonfinite) with the given
// defaults.
TrainerConfig read_trainer_config(ConfigReader& r, const TrainerConfig& defaults);
// Reads the sampling keys (sampler, sample_steps, eta, variance, clip_x0, clip_range).
SamplerConfig read_sampler_config(ConfigReader& r, const SamplerConfig& defaults);

// The batch of one step: x0 (N, ...) f32/f64, or the raw u8 images (N, H, W, C) with the
// batcher's flip rule, decoded to [-1, 1] and mirrored inside the fused kernels (the
// unfused path needs floats).
struct TrainBatch {
  Tensor x0;
  bool flip = false;
  uint64_t flip_seed = 0, flip_stream = 0, flip_first = 0;
};

struct StepStats {
  double loss = 0, grad_norm = 0, lr = 0;
  bool applied = true;  // false: the loss or gradient norm was not finite; nothing changed
  std::vector<int> timesteps;           // each sample's t
  std::vector<double> per_sample_loss;  // and its loss (weighted as trained)
};

class DiffusionTrainer {
 public:
  static constexpr uint64_t kTimestepStream = 0x7100000000000000ull;
  static constexpr uint64_t kNoiseStream = 0x7200000000000000ull;

  DiffusionTrainer(ParameterStore& store, const TrainerConfig& config);

  // One optimiser step on the batch x0 (N, ...). The model maps (x_t, t) to its prediction.
  StepStats step(const Denoiser& model, const Tensor& x0) { return step(model, TrainBatch{x0}); }
  StepStats step(const Denoiser& model, const TrainBatch& batch);

  // The loss of one batch at step `step` (no update), on the tape: the forward half of the
  // unfused step().
  LossResult batch_loss(const Denoiser& model, const Tensor& x0, int64_t step,
                        TimestepBatch* timesteps_out = nullptr) const;

  int64_t step_index() const { return step_; }
  void set_step_index(int64_t step);
  const Schedule& schedule() const { return schedule_; }
  const TrainerConfig& config() const { return config_; }
  AdamW& optimizer() { return optimizer_; }
  Ema* ema() { return ema_ ? &*ema_ : nullptr; }
  TimestepSampler& timestep_sampler() { return timesteps_; }

  // What the fused ops need at step `step` for this batch: tables on the batch's device in
  // the model's dtype, eps's Philox position, the flip rule.
  DiffusionLossSpec fused_loss_spec(const TrainBatch& batch, int64_t step) const;

 private:
  // Runs the loss and backward of one step; returns the loss and the per-sample losses.
  double fused_loss_backward(const Denoiser& model, const TrainBatch& batch,
                             const TimestepBatch& tb, std::vector<double>* per_sample);

  ParameterStore& store_;
  TrainerConfig config_;
  Schedule schedule_;
  std::vector<double> weights_;
  TimestepSampler timesteps_;
  AdamW optimizer_;
  std::optional<Ema> ema_;
  int64_t step_ = 0;
  // The fused loss's tables, uploaded once per (device, dtype).
  mutable Tensor table_sqrt_abar_, table_sqrt_one_minus_abar_, table_weight_;
};

}  // namespace ddpm
