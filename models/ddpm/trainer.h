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

#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "engine/collective.h"
#include "engine/host_readback.h"
#include "engine/optim.h"
#include "engine/parameters.h"
#include "models/config_reader.h"
#include "models/ddpm/losses.h"
#include "models/ddpm/sampler.h"
#include "models/ddpm/schedule.h"
#include "models/ddpm/timestep_sampler.h"

namespace ddpm {

class CapturedStep;

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
  // 0: no EMA. The average is fp32: a decay so near 1 that (1 - decay) |w - ema| is under
  // half a float spacing of ema (1 - 1e-6 for weights ~0.05 moving ~1e-3) leaves it still.
  double ema_decay = 0.0;
  bool ema_warmup = false;  // decay min(ema_decay, (1+k)/(10+k)) at step k
  uint64_t seed = 0;
  bool fused_loss = true;
  // A step whose loss or gradient norm is NaN or infinite is never applied (no AdamW, EMA or
  // importance-history update); the caller then stops the run, or, with skip, goes on.
  bool skip_nonfinite = false;
  // On a GPU, with the fused loss and one shard: after kEagerStepsBeforeCapture eager steps,
  // the step is captured as one CUDA graph and replayed (models/ddpm/captured_step.h).
  bool cuda_graph = false;
};

// Reads the recipe keys (schedule, T, beta_start, beta_end, target, loss, hybrid_lambda,
// vlb_clamp, timestep_sampler, lr, beta1, beta2, adam_eps, weight_decay, warmup, lr_decay,
// steps, grad_clip, ema_decay, ema_warmup, seed, fused_loss, nonfinite, cuda_graph) with the
// given defaults.
TrainerConfig read_trainer_config(ConfigReader& r, const TrainerConfig& defaults);
// Reads the sampling keys (sampler, sample_steps, eta, variance, clip_x0, clip_range);
// sample_steps is at most T, the schedule's length.
SamplerConfig read_sampler_config(ConfigReader& r, const SamplerConfig& defaults, int T);

// The batch of one step: x0 (N, ...) f32/f64, or the raw u8 images (N, H, W, C) with the
// batcher's flip rule, decoded to [-1, 1] and mirrored inside the fused kernels (the
// unfused path needs floats).
struct TrainBatch {
  Tensor x0;
  bool flip = false;
  uint64_t flip_seed = 0, flip_stream = 0, flip_first = 0;
};

struct StepStats {
  int64_t step = 0;  // the step's index (0-based)
  double loss = 0, grad_norm = 0, lr = 0;
  bool applied = true;  // false: the loss or gradient norm was not finite; nothing changed
  std::vector<int> timesteps;           // each sample's t
  std::vector<double> per_sample_loss;  // and its loss (weighted as trained)
};

// One shard of a step's batch (data parallelism, gradient accumulation): shard `index`
// holds the batch's samples [first, first + count).
struct Shard {
  int64_t index = 0, first = 0, count = 0;
};
using ShardData = std::function<TrainBatch(const Shard&)>;   // the shard's samples
using ShardModel = std::function<Denoiser(const Shard&)>;    // its model (dropout keyed by it)

class DiffusionTrainer {
 public:
  static constexpr uint64_t kTimestepStream = 0x7100000000000000ull;
  static constexpr uint64_t kNoiseStream = 0x7200000000000000ull;
  // Shard m's noise is Philox stream kNoiseStream + step + m 2^32 (steps < 2^32): shard 0's
  // is the unsharded step's, and each shard's is the same whichever rank computes it.
  static constexpr int kShardShift = 32;
  static constexpr int64_t kMaxShards = 1 << 14;  // also bounds the dropout streams (unet.cpp)

  DiffusionTrainer(ParameterStore& store, const TrainerConfig& config);
  ~DiffusionTrainer();

  // One optimiser step on the batch x0 (N, ...). The model maps (x_t, t) to its prediction.
  // step() is queue_step() then resolve().
  StepStats step(const Denoiser& model, const Tensor& x0) { return step(model, TrainBatch{x0}); }
  StepStats step(const Denoiser& model, const TrainBatch& batch);

  // The step in two halves, so that the host never waits for the GPU inside a step
  // (docs/training-step.md). queue_step() queues step s: timesteps, forward, loss, backward,
  // the gate, AdamW and the EMA, then the copy of the step's summary to the host, and
  // returns without waiting. resolve() reads the oldest queued step's summary (its loss,
  // norm, verdict, per-sample losses) and returns its stats. Queue step s + 1 before
  // resolving step s and the host reads step s while the GPU runs step s + 1. At most
  // kMaxStepsInFlight steps are queued and unresolved.
  // The bits do not depend on the way: AdamW's bias corrections come from the gates
  // (engine/optim.h), and the importance sampler's history takes step s's losses after step
  // s + 1's timesteps are drawn, both ways (so step s + 1 draws from steps <= s - 1).
  // With "nonfinite": "stop", a refused step halts the gates: a step queued behind it
  // changes nothing either.
  static constexpr int kMaxStepsInFlight = 2;
  // With cuda_graph: eager GPU steps before the capture (the first creates what is made once:
  // tables, handles, workspaces, the optimiser's device counters).
  static constexpr int kEagerStepsBeforeCapture = 2;
  void queue_step(const Denoiser& model, const TrainBatch& batch);
  StepStats resolve();
  int64_t steps_in_flight() const { return static_cast<int64_t>(in_flight_.size()); }

  // The step of a batch of `batch` samples cut into M = batch / shard_size shards, of which
  // this rank of `world` computes shards [r M/W, (r+1) M/W) (W ranks):
  //   g = (1/M) sum_m g_m    (g_m: the gradient of shard m's mean loss; the sum in shard
  //                           order, engine/collective.h), loss = (1/M) sum_m loss_m
  // Timesteps are drawn for the whole batch as step() draws them, then sliced; shard m's
  // noise and dropout are keyed by m. So the bits depend on (batch, shard_size), not on W:
  // 2 ranks of 1 shard each compute exactly what 1 rank of 2 shards computes. Every rank
  // ends with the same weights, moments, EMA and importance history (per-sample losses are
  // gathered in shard order). With M = 1 and W = 1 it is step() with one batch.
  StepStats step_sharded(const ShardModel& model, const ShardData& data, int64_t batch,
                         int64_t shard_size, Collective& world);
  // Its first half (the shards' losses are read as they are gathered; the summary is not).
  void queue_step_sharded(const ShardModel& model, const ShardData& data, int64_t batch,
                          int64_t shard_size, Collective& world);

  // The loss of one batch at step `step` (no update), on the tape: the forward half of the
  // unfused step().
  LossResult batch_loss(const Denoiser& model, const Tensor& x0, int64_t step,
                        TimestepBatch* timesteps_out = nullptr) const;

  int64_t step_index() const { return step_; }  // the next step to queue
  void set_step_index(int64_t step);
  const Schedule& schedule() const { return schedule_; }
  const TrainerConfig& config() const { return config_; }
  // The captured step, once cuda_graph has captured it (null before, and on the CPU).
  const CapturedStep* captured_step() const { return captured_.get(); }
  AdamW& optimizer() { return optimizer_; }
  Ema* ema() { return ema_ ? &*ema_ : nullptr; }
  TimestepSampler& timestep_sampler() { return timesteps_; }

  // What the fused ops need at step `step` for this batch: tables on the batch's device in
  // the model's dtype, eps's Philox position, the flip rule.
  DiffusionLossSpec fused_loss_spec(const TrainBatch& batch, int64_t step,
                                    int64_t shard = 0) const;

 private:
  uint64_t noise_stream(int64_t step, int64_t shard) const;
  // The unfused chain's loss of x0 at timesteps tb with noise from `stream`, on the tape.
  LossResult unfused_loss(const Denoiser& model, const Tensor& x0, const TimestepBatch& tb,
                          uint64_t stream) const;
  // A batch's loss and per-sample losses, on the batch's device (not yet read back).
  struct ShardLoss {
    Tensor loss, per_sample;  // scalar, (n)
    std::vector<double> read() const;  // [per-sample losses..., loss], in one copy
  };
  // What one batch's fused loss reads besides the batch: its timesteps on the batch's device
  // (i32 for the loss; f32 for the model, or undefined: the model uploads its own), the
  // importance weights (undefined: 1), and the step's inputs in device memory (null: its
  // keys, lr and EMA decay are passed as numbers). Fresh uploads for an eager step; the
  // fixed buffers for a captured one.
  struct StepTensors {
    Tensor t, t_model, importance;
    const StepInputs* live = nullptr;
  };
  StepTensors upload_step_tensors(const TimestepBatch& tb, Device device) const;
  // The loss and backward of one batch (a whole step's, or one shard's) at timesteps tb.
  // Gradients accumulate into the store.
  ShardLoss loss_backward(const Denoiser& model, const TrainBatch& batch, const TimestepBatch& tb,
                          int64_t shard);
  ShardLoss fused_loss_backward(const Denoiser& model, const TrainBatch& batch,
                                const TimestepBatch& tb, int64_t shard, const StepTensors& st);
  // A whole step on the GPU with the fused loss: the per-step values uploaded into
  // step_inputs_, then the step queued eagerly or, with cuda_graph, by a graph launch.
  void queue_gpu_step(const Denoiser& model, const TrainBatch& batch, const TimestepBatch& tb,
                      double lr);
  // A whole step's work, queued (what a graph captures): zero_grad, loss and backward, the
  // summary, the gated update. `gpu`: the fused loss with those tensors (lr and the EMA
  // decay then read from gpu->live); null: loss_backward's way. Returns the summary.
  Tensor step_work(const Denoiser& model, const TrainBatch& batch, const TimestepBatch& tb,
                   const StepTensors* gpu);
  // Gate, AdamW and the EMA, once the step's gradient is in place: the update gated by
  // `summary` (AdamW::step_summary); with `live`, lr and the decay read from there.
  void apply_gated(const Tensor& summary, const StepInputs* live);
  // Timesteps for the step being queued; the history then takes the resolved losses of the
  // step before it.
  TimestepBatch draw_timesteps(int64_t n);
  void require_room() const;  // fewer than kMaxStepsInFlight steps unresolved
  Refusal refusal() const { return config_.skip_nonfinite ? Refusal::Skip : Refusal::Halt; }
  // The host's side of a queued step: its summary's copy to the host started, the step put
  // in flight. Pass the per-sample losses when the host has them already (the sharded
  // step), else they are read from the summary.
  void enqueue(const TimestepBatch& tb, double lr, const Tensor& summary,
               std::vector<double> per_sample);
  double lr_at(int64_t step) const;

  struct InFlight {
    int64_t step = 0;
    double lr = 0;
    TimestepBatch tb;
    std::vector<double> per_sample;  // empty: in the summary
  };

  ParameterStore& store_;
  TrainerConfig config_;
  Schedule schedule_;
  std::vector<double> weights_;
  TimestepSampler timesteps_;
  AdamW optimizer_;
  std::optional<Ema> ema_;
  int64_t step_ = 0;
  std::deque<InFlight> in_flight_;
  HostReadback readbacks_[kMaxStepsInFlight];  // step s's summary comes back through s % 2
  // The fused loss's tables, uploaded once per (device, dtype).
  mutable Tensor table_sqrt_abar_, table_sqrt_one_minus_abar_, table_weight_;
  // GPU steps: StepInputs (kStepInputDoubles f64 slots, allocated once: a captured step reads
  // it), the eager GPU steps taken, the captured step.
  Tensor step_inputs_;
  int64_t eager_gpu_steps_ = 0;
  std::unique_ptr<CapturedStep> captured_;
};

}  // namespace ddpm
