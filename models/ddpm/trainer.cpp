#include "models/ddpm/trainer.h"

#include <cmath>

#include "engine/device.h"
#include "engine/op_profile.h"
#include "models/ddpm/captured_step.h"

namespace ddpm {

TrainerConfig read_trainer_config(ConfigReader& r, const TrainerConfig& d) {
  TrainerConfig c = d;
  c.schedule.kind = parse_schedule_kind(
      r.choice("schedule", schedule_kind_name(d.schedule.kind), {"linear", "cosine"}));
  c.schedule.T = static_cast<int>(r.integer("T", d.schedule.T, 2, 100000));
  c.schedule.beta_start = r.number("beta_start", d.schedule.beta_start, 1e-8, 0.5);
  c.schedule.beta_end = r.number("beta_end", d.schedule.beta_end, 1e-8, 0.999);
  c.target = parse_target(r.choice("target", target_name(d.target), {"epsilon", "x0", "v"}));
  c.loss.kind =
      parse_loss_kind(r.choice("loss", loss_kind_name(d.loss.kind), {"simple", "vlb", "hybrid"}));
  c.loss.hybrid_lambda = r.number("hybrid_lambda", d.loss.hybrid_lambda, 0, 1e6);
  c.loss.vlb_clamp = r.number("vlb_clamp", d.loss.vlb_clamp, 0, 1e12);
  c.timestep_sampler = parse_timestep_sampler(
      r.choice("timestep_sampler", timestep_sampler_name(d.timestep_sampler),
               {"uniform", "stratified", "importance"}));
  c.adam.lr = r.number("lr", d.adam.lr, 1e-12, 10);
  c.adam.beta1 = r.number("beta1", d.adam.beta1, 0, 0.999999);
  c.adam.beta2 = r.number("beta2", d.adam.beta2, 0, 0.999999999);
  c.adam.eps = r.number("adam_eps", d.adam.eps, 1e-20, 1);
  c.adam.weight_decay = r.number("weight_decay", d.adam.weight_decay, 0, 10);
  c.warmup = r.integer("warmup", d.warmup, 0, 1'000'000'000);
  c.lr_decay = parse_lr_decay(r.choice(
      "lr_decay", d.lr_decay == LrDecay::Constant ? "constant" : "cosine", {"constant", "cosine"}));
  c.steps = r.integer("steps", d.steps, 1, 1'000'000'000);
  c.grad_clip = r.number("grad_clip", d.grad_clip, 0, 1e12);
  c.ema_decay = r.number("ema_decay", d.ema_decay, 0, 0.99999999);
  c.ema_warmup = r.boolean("ema_warmup", d.ema_warmup);
  c.seed = static_cast<uint64_t>(r.integer("seed", static_cast<int64_t>(d.seed), 0, INT64_MAX));
  c.fused_loss = r.boolean("fused_loss", d.fused_loss);
  c.skip_nonfinite =
      r.choice("nonfinite", d.skip_nonfinite ? "skip" : "stop", {"stop", "skip"}) == "skip";
  c.cuda_graph = r.boolean("cuda_graph", d.cuda_graph);
  CHECK(!c.cuda_graph || c.fused_loss,
        "config key 'cuda_graph': a captured step needs the fused loss (the unfused chain "
        "reads the losses back inside the step); set \"fused_loss\": true or drop cuda_graph");
  return c;
}

SamplerConfig read_sampler_config(ConfigReader& r, const SamplerConfig& d, int T) {
  SamplerConfig c = d;
  c.kind = parse_sampler_kind(
      r.choice("sampler", d.kind == SamplerKind::Ddpm ? "ddpm" : "ddim", {"ddpm", "ddim"}));
  c.steps = static_cast<int>(r.integer("sample_steps", d.steps, 0, 100000));
  r.require(c.steps <= T, "sample_steps",
            std::to_string(c.steps) + " is more than the schedule's T = " + std::to_string(T) +
                " (0 samples with all T)");
  c.eta = r.number("eta", d.eta, 0, 10);
  c.fixed_large = r.choice("variance", d.fixed_large ? "fixed_large" : "fixed_small",
                           {"fixed_large", "fixed_small"}) == "fixed_large";
  c.clip_x0 = r.boolean("clip_x0", d.clip_x0);
  c.clip_range = r.number("clip_range", d.clip_range, 1e-6, 1e6);
  return c;
}

DiffusionTrainer::DiffusionTrainer(ParameterStore& store, const TrainerConfig& config)
    : store_(store),
      config_(config),
      schedule_(make_schedule(config.schedule)),
      weights_(loss_weights(schedule_, config.target, config.loss)),
      timesteps_(config.timestep_sampler, config.schedule.T),
      optimizer_(store, config.adam) {
  if (config.ema_decay > 0) ema_.emplace(store, config.ema_decay, config.ema_warmup);
  for (int t = 0; t < schedule_.T; ++t)
    CHECK(std::isfinite(weights_[t]),
          "loss weight at t=" << t << " is not finite: the " << loss_kind_name(config.loss.kind)
                              << " loss with variance fixed_small divides by beta_tilde_0 = 0 "
                                 "(set vlb_clamp, or variance fixed_large)");
}

DiffusionTrainer::~DiffusionTrainer() = default;

void DiffusionTrainer::set_step_index(int64_t step) {
  CHECK(step >= 0, "step index must be >= 0");
  CHECK(in_flight_.empty(), "set_step_index with " << in_flight_.size() << " steps unresolved");
  step_ = step;
  // A run moved to another step (a checkpoint loaded) starts its GPU steps over: eager first
  // (the optimiser's device counters are refreshed by an eager step's summary), then a new
  // capture.
  captured_.reset();
  eager_gpu_steps_ = 0;
}

uint64_t DiffusionTrainer::noise_stream(int64_t step, int64_t shard) const {
  return kNoiseStream + static_cast<uint64_t>(step) + (static_cast<uint64_t>(shard) << kShardShift);
}

LossResult DiffusionTrainer::unfused_loss(const Denoiser& model, const Tensor& x0,
                                          const TimestepBatch& tb, uint64_t stream) const {
  const NoiseLevels lv = NoiseLevels::at(schedule_, tb.t);
  const Tensor eps = randn(x0.shape(), config_.seed, stream, x0.device()).to(x0.dtype());
  const Tensor x_t = make_x_t(lv, x0, eps);
  const Tensor target = target_from(config_.target, lv, x0, eps);
  return diffusion_loss(model(x_t, tb.t), target, tb.t, weights_,
                        config_.timestep_sampler == TimestepSamplerKind::Importance
                            ? tb.weights
                            : std::vector<double>{});
}

LossResult DiffusionTrainer::batch_loss(const Denoiser& model, const Tensor& x0, int64_t step,
                                        TimestepBatch* timesteps_out) const {
  const int64_t n = x0.shape()[0];
  TimestepBatch tb = timesteps_.sample(static_cast<int>(n), config_.seed,
                                       kTimestepStream + static_cast<uint64_t>(step));
  LossResult r = unfused_loss(model, x0, tb, noise_stream(step, 0));
  if (timesteps_out) *timesteps_out = std::move(tb);
  return r;
}

DiffusionLossSpec DiffusionTrainer::fused_loss_spec(const TrainBatch& batch, int64_t step,
                                                    int64_t shard) const {
  const Device device = batch.x0.device();
  const DType dtype = batch.x0.dtype() == DType::U8 ? DType::F32 : batch.x0.dtype();
  if (!table_weight_.defined() || table_weight_.device() != device ||
      table_weight_.dtype() != dtype) {
    const auto upload = [&](const std::vector<double>& v) {
      return Tensor::from_vector<double>(Shape{static_cast<int64_t>(v.size())}, v)
          .to(dtype)
          .to(device);
    };
    table_sqrt_abar_ = upload(schedule_.sqrt_alpha_bar);
    table_sqrt_one_minus_abar_ = upload(schedule_.sqrt_one_minus_alpha_bar);
    table_weight_ = upload(weights_);
  }
  DiffusionLossSpec spec;
  spec.target = to_diffusion_target(config_.target);
  spec.sqrt_abar = table_sqrt_abar_;
  spec.sqrt_one_minus_abar = table_sqrt_one_minus_abar_;
  spec.weight = table_weight_;
  spec.noise_seed = config_.seed;
  spec.noise_stream = noise_stream(step, shard);
  spec.flip = batch.flip;
  spec.flip_seed = batch.flip_seed;
  spec.flip_stream = batch.flip_stream;
  spec.flip_first = batch.flip_first;
  return spec;
}

DiffusionTrainer::StepTensors DiffusionTrainer::upload_step_tensors(const TimestepBatch& tb,
                                                                    Device device) const {
  StepTensors st;
  st.t = timestep_tensor(tb.t, schedule_.T, device);
  if (device != Device::CPU)  // the model's (f32 on a GPU); on the CPU the model makes its own
    st.t_model = Tensor::from_vector<double>(Shape{static_cast<int64_t>(tb.t.size())},
                                             std::vector<double>(tb.t.begin(), tb.t.end()))
                     .to(DType::F32)
                     .to(device);
  return st;
}

DiffusionTrainer::ShardLoss DiffusionTrainer::fused_loss_backward(const Denoiser& model,
                                                                  const TrainBatch& batch,
                                                                  const TimestepBatch& tb,
                                                                  int64_t shard,
                                                                  const StepTensors& st) {
  DiffusionLossSpec spec = fused_loss_spec(batch, step_, shard);
  const uint64_t* live_step = nullptr;
  if (st.live) {  // the same keys, read from the step's inputs in device memory
    CHECK(shard == 0, "step inputs in device memory are a whole step's, not shard " << shard);
    live_step = step_field(st.live);
    spec.noise_stream = StepKey(noise_stream(0, shard), 1, live_step);
    spec.flip_first = StepKey(0, 1, flip_first_field(st.live));
  }
  Tensor x_t, pred;
  {
    ProfileRange range("diffusion corrupt (fused)");
    x_t = diffusion_corrupt(batch.x0, st.t, spec);
  }
  {
    ProfileRange range("model forward");
    pred = model(x_t, Timesteps(tb.t, st.t_model, live_step));
  }
  Tensor importance = st.importance;
  if (!importance.defined() && config_.timestep_sampler == TimestepSamplerKind::Importance)
    importance = Tensor::from_vector<double>(Shape{static_cast<int64_t>(tb.weights.size())},
                                             tb.weights)
                     .to(pred.dtype())
                     .to(batch.x0.device());
  FusedDiffusionLoss f;
  {
    ProfileRange range("diffusion loss (fused)");
    f = diffusion_loss_fused(pred, batch.x0, st.t, importance, spec);
  }
  ProfileRange range("backward");
  tape().backward(pred, f.dpred, Tape::SeedUse::Adopt);
  return {f.loss, f.per_sample};
}

DiffusionTrainer::ShardLoss DiffusionTrainer::loss_backward(const Denoiser& model,
                                                            const TrainBatch& batch,
                                                            const TimestepBatch& tb,
                                                            int64_t shard) {
  if (config_.fused_loss)
    return fused_loss_backward(model, batch, tb, shard,
                               upload_step_tensors(tb, batch.x0.device()));
  CHECK(batch.x0.dtype() != DType::U8,
        "the unfused loss (\"fused_loss\": false) needs an f32/f64 batch, got "
            << batch.x0.describe());
  CHECK(!batch.flip, "the unfused loss takes batches already flipped");
  ProfileRange range("forward + loss + backward (unfused)");
  LossResult r = unfused_loss(model, batch.x0, tb, noise_stream(step_, shard));
  backward(r.loss);
  const Tensor per_sample =  // already on the host (the unfused chain reads the mse back)
      Tensor::from_vector<double>(Shape{static_cast<int64_t>(r.per_sample.size())}, r.per_sample)
          .to(r.loss.dtype())
          .to(r.loss.device());
  return {r.loss, per_sample};
}

std::vector<double> DiffusionTrainer::ShardLoss::read() const {
  NoGradGuard no_grad;
  return concat({per_sample, reshape(loss, Shape{1})})
      .to(Device::CPU)
      .to(DType::F64)
      .to_vector<double>();
}

TimestepBatch DiffusionTrainer::draw_timesteps(int64_t n) {
  TimestepBatch tb = timesteps_.sample(static_cast<int>(n), config_.seed,
                                       kTimestepStream + static_cast<uint64_t>(step_));
  timesteps_.merge_recorded(step_);  // the losses of the step before, if resolved
  return tb;
}

StepStats DiffusionTrainer::step(const Denoiser& model, const TrainBatch& batch) {
  queue_step(model, batch);
  return resolve();
}

void DiffusionTrainer::require_room() const {
  CHECK(steps_in_flight() < kMaxStepsInFlight,
        "DiffusionTrainer: " << kMaxStepsInFlight << " steps are queued and unresolved; "
                             << "resolve() one before queueing step " << step_);
}

double DiffusionTrainer::lr_at(int64_t step) const {
  return learning_rate(step, config_.adam.lr, config_.warmup, config_.steps, config_.lr_decay);
}

void DiffusionTrainer::queue_step(const Denoiser& model, const TrainBatch& batch) {
  require_room();
  const TimestepBatch tb = draw_timesteps(batch.x0.shape()[0]);
  const double lr = lr_at(step_);
  if (batch.x0.device() != Device::CPU && config_.fused_loss) {
    queue_gpu_step(model, batch, tb, lr);
    return;
  }
  enqueue(tb, lr, step_work(model, batch, tb, nullptr), {});
}

void DiffusionTrainer::queue_gpu_step(const Denoiser& model, const TrainBatch& batch,
                                      const TimestepBatch& tb, double lr) {
  const Device device = batch.x0.device();
  if (!step_inputs_.defined())  // before any capture: the graph reads it at this address
    step_inputs_ = Tensor::zeros(Shape{kStepInputDoubles}, DType::F64, device);
  StepInputs in;
  in.step = static_cast<uint64_t>(step_);
  in.flip_first = batch.flip_first;
  in.lr = static_cast<float>(lr);  // the floats AdamW::params and Ema::rate_at give
  in.ema_rate = ema_ ? ema_->rate_at(step_) : 0.0f;
  device_copy(step_inputs_.raw(), device, &in, Device::CPU, sizeof in);
  const auto* live = reinterpret_cast<const StepInputs*>(step_inputs_.raw());

  if (!config_.cuda_graph || eager_gpu_steps_ < kEagerStepsBeforeCapture) {
    ++eager_gpu_steps_;
    StepTensors st = upload_step_tensors(tb, device);
    st.live = live;
    enqueue(tb, lr, step_work(model, batch, tb, &st), {});
    return;
  }
  CHECK(!op_profiling(), "cuda_graph: the op profile times ops one by one, which a captured "
                         "step does not launch; profile without cuda_graph");
  const bool importance = config_.timestep_sampler == TimestepSamplerKind::Importance;
  if (!captured_) captured_ = std::make_unique<CapturedStep>(batch, importance);
  captured_->stage(batch, tb);
  if (!captured_->captured()) {
    const StepTensors st{captured_->t(), captured_->t_model(), captured_->importance(), live};
    captured_->capture([&] { return step_work(model, captured_->batch(), tb, &st); });
  } else {
    CHECK(!optimizer_.counters_stale(),
          "cuda_graph: the optimiser's step count changed after the step was captured (a "
          "replay cannot refresh its device counters); set_step_index drops the capture");
    optimizer_.count_replayed_gate();  // the captured gated_step counted the first
  }
  captured_->launch();
  enqueue(tb, lr, captured_->summary(), {});
}

Tensor DiffusionTrainer::step_work(const Denoiser& model, const TrainBatch& batch,
                                   const TimestepBatch& tb, const StepTensors* gpu) {
  store_.zero_grad();
  const ShardLoss l =
      gpu ? fused_loss_backward(model, batch, tb, 0, *gpu) : loss_backward(model, batch, tb, 0);
  const Tensor summary =
      optimizer_.step_summary(l.per_sample, l.loss, config_.grad_clip, refusal());
  apply_gated(summary, gpu ? gpu->live : nullptr);
  return summary;
}

void DiffusionTrainer::apply_gated(const Tensor& summary, const StepInputs* live) {
  ProfileRange range("gate + AdamW + EMA");
  // Clipped and gated where the gradient lives: the host queues the update without waiting
  // for the norm. NaN/Inf never reaches the weights, the moments or the history. With
  // `live`, lr and the EMA decay are read from the step's inputs in device memory.
  optimizer_.gated_step(lr_at(step_), summary, ema(), step_, live);  // AdamW + EMA, one pass
}

StepStats DiffusionTrainer::step_sharded(const ShardModel& model, const ShardData& data,
                                         int64_t batch, int64_t shard_size, Collective& world) {
  queue_step_sharded(model, data, batch, shard_size, world);
  return resolve();
}

void DiffusionTrainer::queue_step_sharded(const ShardModel& model, const ShardData& data,
                                          int64_t batch, int64_t shard_size, Collective& world) {
  CHECK(shard_size >= 1 && batch >= shard_size && batch % shard_size == 0,
        "a batch of " << batch << " cannot be cut into shards of " << shard_size);
  const int64_t shards = batch / shard_size, ranks = world.size();
  CHECK(shards <= kMaxShards, batch << " / " << shard_size << " = " << shards
                                    << " shards per step; at most " << kMaxShards);
  CHECK(shards % ranks == 0, shards << " shards per step cannot be shared by " << ranks
                                    << " ranks (the shard count must be a multiple of the rank count)");
  require_room();
  const TimestepBatch all = draw_timesteps(batch);
  // Per local shard: its gradient, and the record [loss, per-sample losses...] every rank gets.
  std::vector<Tensor> grads;
  std::vector<double> record;
  const int64_t mine = shards / ranks;
  for (int64_t m = world.rank() * mine; m < (world.rank() + 1) * mine; ++m) {
    const Shard sh{m, m * shard_size, shard_size};
    TimestepBatch tb;
    tb.t.assign(all.t.begin() + sh.first, all.t.begin() + sh.first + sh.count);
    tb.weights.assign(all.weights.begin() + sh.first, all.weights.begin() + sh.first + sh.count);
    store_.zero_grad();
    std::vector<double> shard_record = loss_backward(model(sh), data(sh), tb, m).read();
    CHECK(static_cast<int64_t>(shard_record.size()) == sh.count + 1,
          "shard " << m << ": " << shard_record.size() - 1 << " per-sample losses for "
                   << sh.count);
    record.push_back(shard_record.back());  // [loss, per-sample losses...]
    record.insert(record.end(), shard_record.begin(), shard_record.end() - 1);
    grads.push_back(store_.flat_grad().clone());
  }
  {
    ProfileRange range("gradient sum over shards and ranks");
    world.sum_in_rank_order(grads, store_.flat_grad());
    grads.clear();
    if (shards > 1) scale_in_place(store_.flat_grad(), 1.0 / shards);
  }
  const std::vector<double> gathered = world.all_gather(record);
  std::vector<double> per_sample;
  double loss = 0;
  for (int64_t m = 0; m < shards; ++m) {
    const auto at = gathered.begin() + m * (shard_size + 1);
    loss += *at;
    per_sample.insert(per_sample.end(), at + 1, at + 1 + shard_size);
  }
  loss /= static_cast<double>(shards);
  const Tensor loss_tensor =
      Tensor::from_vector<double>(Shape{1}, {loss}).to(store_.flat_grad().device());
  const Tensor summary =
      optimizer_.step_summary(Tensor(), loss_tensor, config_.grad_clip, refusal());
  apply_gated(summary, nullptr);
  enqueue(all, lr_at(step_), summary, std::move(per_sample));
}

void DiffusionTrainer::enqueue(const TimestepBatch& tb, double lr, const Tensor& summary,
                               std::vector<double> per_sample) {
  InFlight f;
  f.step = step_;
  f.lr = lr;
  f.tb = tb;
  f.per_sample = std::move(per_sample);
  readbacks_[step_ % kMaxStepsInFlight].start(summary);
  in_flight_.push_back(std::move(f));
  ++step_;
}

StepStats DiffusionTrainer::resolve() {
  CHECK(!in_flight_.empty(), "DiffusionTrainer::resolve without a queued step");
  InFlight f = std::move(in_flight_.front());
  in_flight_.pop_front();
  std::vector<double> back;
  {
    ProfileRange read("step summary to the host");  // the host's one wait, a step late at best
    back = readbacks_[f.step % kMaxStepsInFlight].finish();
  }
  const StepGate gate = summary_gate(back);
  optimizer_.resolve_gated_step(gate);
  back.resize(back.size() - kStepGateDoubles);
  StepStats st;
  st.step = f.step;
  st.lr = f.lr;
  st.loss = gate.loss;
  st.grad_norm = gate.grad_norm;
  st.applied = gate.applied != 0;
  st.timesteps = std::move(f.tb.t);
  st.per_sample_loss = f.per_sample.empty() ? std::move(back) : std::move(f.per_sample);
  if (st.applied) {
    timesteps_.record(st.step, st.timesteps, st.per_sample_loss);
    timesteps_.merge_recorded(step_ - 1);  // at once when the next step has drawn already
  }
  return st;
}

}  // namespace ddpm
