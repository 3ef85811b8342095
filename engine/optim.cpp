#include "engine/optim.h"

#include <algorithm>
#include <cmath>

#include "engine/op_profile.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "engine/weight_copy.h"
#include "kernels/cpu/optim.h"
#include "kernels/cpu_fast/vector_ops.h"
#include "kernels/optim_math.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/optim.cuh"
#endif

namespace ddpm {

namespace {

void require_f32(const char* what, const ParameterStore& store) {
  CHECK(store.finalized(), what << ": the parameter store is not finalized");
  const Tensor flat = store.flat_data();
  CHECK(flat.dtype() == DType::F32, what << " runs on f32 parameters, got " << flat.describe());
}

bool on_gpu(const Tensor& t) { return t.device() == Device::CUDA; }

// The sum of the squares of every gradient, as a one-element f64 tensor on their device.
Tensor gradient_sum_of_squares(const ParameterStore& store) {
  const Tensor grad = store.flat_grad();
  Tensor squares = Tensor::empty(Shape{1}, DType::F64, grad.device());
  if (on_gpu(grad)) {
#if DDPM_WITH_CUDA
    const Tensor scratch = Tensor::empty(Shape{cuda::kSumOfSquaresWorkspace}, DType::F64, Device::CUDA);
    cuda::sum_of_squares(grad.numel(), grad.data<float>(), scratch.data<double>(),
                         squares.data<double>());
#endif
  } else if (detail::runs_cpu_fast(grad)) {
    DDPM_CPU_FAST_ONLY(*squares.data<double>() =
                           cpu_fast::sum_of_squares(grad.numel(), grad.data<float>()));
  } else {
    *squares.data<double>() = cpu::sum_of_squares(grad.numel(), grad.data<float>());
  }
  return squares;
}

// The summary of a step (AdamW::step_summary), counters on the gradients' device.
Tensor summarize(const ParameterStore& store, const Tensor& per_sample, const Tensor& loss,
                 const StepSummaryRule& rule, StepCounters* counters) {
  require_f32("step_summary", store);
  const Device device = store.flat_grad().device();
  CHECK(loss.numel() == 1 && loss.device() == device &&
            (loss.dtype() == DType::F32 || loss.dtype() == DType::F64),
        "step_summary: the loss " << loss.describe() << " is not an f32/f64 scalar on "
                                  << device_name(device));
  const int64_t n = per_sample.defined() ? per_sample.numel() : 0;
  CHECK(n == 0 || (per_sample.device() == device && per_sample.dtype() == loss.dtype()),
        "step_summary: the per-sample losses " << per_sample.describe() << " differ from the loss "
                                               << loss.describe() << " in dtype or device");
  OpTimer timer("step summary (norm, gate)", device == Device::CUDA);
  const Tensor squares = gradient_sum_of_squares(store);
  Tensor out = Tensor::empty(Shape{n + kStepGateDoubles}, DType::F64, device);
  double* o = out.data<double>();
  const double* sq = squares.data<double>();
  if (device == Device::CUDA) {
#if DDPM_WITH_CUDA
    if (loss.dtype() == DType::F32)
      cuda::step_summary<float>(n, n ? per_sample.data<float>() : nullptr, loss.data<float>(), sq,
                                rule, counters, o);
    else
      cuda::step_summary<double>(n, n ? per_sample.data<double>() : nullptr, loss.data<double>(),
                                 sq, rule, counters, o);
#endif
  } else {
    const auto value = [](const Tensor& t, int64_t i) {
      return t.dtype() == DType::F32 ? static_cast<double>(t.data<float>()[i]) : t.data<double>()[i];
    };
    for (int64_t i = 0; i < n; ++i) o[i] = value(per_sample, i);
    store_step_gate(step_gate(value(loss, 0), *sq, rule, *counters), o + n);
  }
  return out;
}

}  // namespace

AdamW::AdamW(const ParameterStore& store, const AdamWConfig& config)
    : store_(store), config_(config) {
  require_f32("AdamW", store);
  CHECK(config.lr > 0, "AdamW: lr must be > 0, got " << config.lr);
  CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1,
        "AdamW: betas must be in [0, 1), got " << config.beta1 << ", " << config.beta2);
  CHECK(config.eps > 0, "AdamW: eps must be > 0, got " << config.eps);
  const Tensor flat = store.flat_data();
  m_ = Tensor::zeros(flat.shape(), flat.dtype(), flat.device());
  v_ = Tensor::zeros(flat.shape(), flat.dtype(), flat.device());
}

AdamWParams AdamW::params(double lr) const {
  AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(config_.beta1);
  p.beta2 = static_cast<float>(config_.beta2);
  p.one_minus_beta1 = static_cast<float>(1.0 - config_.beta1);
  p.one_minus_beta2 = static_cast<float>(1.0 - config_.beta2);
  p.eps = static_cast<float>(config_.eps);
  p.weight_decay = static_cast<float>(config_.weight_decay);
  p.bias_correction1 = static_cast<float>(1.0 - counters_.beta1_power);
  p.bias_correction2 = static_cast<float>(1.0 - counters_.beta2_power);
  return p;
}

void AdamW::step(double lr, Ema* ema, int64_t ema_index) {
  CHECK(unresolved_ == 0, "AdamW::step with " << unresolved_
                                              << " gated steps not yet resolved (read their gates first)");
  count_applied_step(counters_, config_.beta1, config_.beta2);
  stale_ = true;
  launch(params(lr), ema, ema_index, nullptr);
}

void AdamW::set_steps_taken(int64_t t) {
  CHECK(t >= 0, "AdamW: a step count of " << t);
  CHECK(unresolved_ == 0, "AdamW::set_steps_taken with " << unresolved_ << " gated steps unresolved");
  counters_ = StepCounters{};
  for (int64_t i = 0; i < t; ++i) count_applied_step(counters_, config_.beta1, config_.beta2);
  stale_ = true;
}

Tensor AdamW::step_summary(const Tensor& per_sample, const Tensor& loss, double max_norm,
                           Refusal refusal) {
  const Device device = store_.flat_grad().device();
  if (stale_) {  // the host's count is the truth (no gated step is in flight)
    const StepCounters& c = counters_;
    device_counters_ = Tensor::from_vector<double>(
                           Shape{kStepCounterDoubles},
                           {c.steps, c.beta1_power, c.beta2_power, c.halted})
                           .to(device);
    stale_ = false;
  }
  StepSummaryRule rule;
  rule.max_norm = max_norm;
  rule.beta1 = config_.beta1;
  rule.beta2 = config_.beta2;
  rule.refusal = refusal;
  return summarize(store_, per_sample, loss, rule,
                            reinterpret_cast<StepCounters*>(device_counters_.data<double>()));
}

void AdamW::gated_step(double lr, const Tensor& summary, Ema* ema, int64_t ema_index,
                       const StepInputs* inputs) {
  const Tensor flat = store_.flat_data();
  CHECK(summary.dtype() == DType::F64 && summary.shape().ndim() == 1 &&
            summary.numel() >= kStepGateDoubles && summary.device() == flat.device(),
        "AdamW::gated_step: the summary " << summary.describe() << " is not step_summary's "
                                          << "(an f64 vector on the parameters' device)");
  const auto* gate = reinterpret_cast<const StepGate*>(summary.data<double>() + summary.numel() -
                                                      kStepGateDoubles);
  CHECK(!inputs || on_gpu(flat), "AdamW::gated_step: step inputs in device memory on the CPU");
  ++unresolved_;
  launch(params(lr), ema, ema_index, gate, inputs);  // the gate's bias corrections replace params'
}

void AdamW::resolve_gated_step(const StepGate& gate) {
  CHECK(unresolved_ > 0, "AdamW::resolve_gated_step without a gated step to resolve");
  --unresolved_;
  if (gate.applied == 0) return;
  count_applied_step(counters_, config_.beta1, config_.beta2);
  CHECK(gate.bias_correction1 == 1.0 - counters_.beta1_power &&
            gate.bias_correction2 == 1.0 - counters_.beta2_power,
        "AdamW: the gate of applied step " << counters_.steps << " has bias corrections "
                                           << gate.bias_correction1 << ", " << gate.bias_correction2
                                           << "; the host's count gives "
                                           << 1.0 - counters_.beta1_power << ", "
                                           << 1.0 - counters_.beta2_power
                                           << " (gates resolved out of order?)");
}

void AdamW::launch(const AdamWParams& p, Ema* ema, int64_t ema_index, const StepGate* gate,
                   const StepInputs* inputs) {
  const Tensor flat = store_.flat_data();
  const float ema_rate = ema ? ema->rate_at(ema_index) : 0.0f;
  float* const ema_weights = ema ? ema->weights().data<float>() : nullptr;
  OpTimer timer(ema ? "AdamW + EMA" : "AdamW", on_gpu(flat));
  // the bf16 copy of the weights, when kept (engine/weight_copy.h; GPU only), written in the
  // same pass
  write_with_copy(flat, [&](uint16_t* copy) {
    if (on_gpu(flat)) {
#if DDPM_WITH_CUDA
      cuda::adamw_step(flat.numel(), p, flat.data<float>(), store_.flat_grad().data<float>(),
                       m_.data<float>(), v_.data<float>(), ema_rate, ema_weights, gate, inputs,
                       copy);
#endif
    } else {
      cpu::adamw_step(flat.numel(), p, flat.data<float>(), store_.flat_grad().data<float>(),
                      m_.data<float>(), v_.data<float>(), ema_rate, ema_weights, gate);
    }
  });
}

StepGate summary_gate(const std::vector<double>& summary) {
  CHECK(summary.size() >= kStepGateDoubles,
        "a step summary of " << summary.size() << " values has no gate");
  const double* g = summary.data() + summary.size() - kStepGateDoubles;
  return StepGate{g[0], g[1], g[2], g[3], g[4], g[5]};
}

double clip_grad_norm(const ParameterStore& store, double max_norm) {
  require_f32("clip_grad_norm", store);
  const Tensor grad = store.flat_grad();
  const double squares =
      gradient_sum_of_squares(store).to(Device::CPU).to_vector<double>().front();
  const double norm = std::sqrt(squares);
  if (max_norm > 0 && norm > max_norm) {
    scale_in_place(grad, max_norm / norm);
  }
  return norm;
}

Ema::Ema(const ParameterStore& store, double decay, bool warmup)
    : store_(store), decay_(decay), warmup_(warmup), shadow_(store.flat_data().clone()) {
  require_f32("Ema", store);
  CHECK(decay >= 0 && decay < 1, "EMA decay must be in [0, 1), got " << decay);
}

float Ema::rate_at(int64_t k) const {
  return static_cast<float>(1.0 - (warmup_ ? std::min(decay_, (1.0 + k) / (10.0 + k)) : decay_));
}

void Ema::update(int64_t k) {
  const float r = rate_at(k);
  const Tensor flat = store_.flat_data();
  if (on_gpu(flat)) {
#if DDPM_WITH_CUDA
    cuda::ema_update(flat.numel(), r, flat.data<float>(), shadow_.data<float>());
#endif
  } else {
    cpu::ema_update(flat.numel(), r, flat.data<float>(), shadow_.data<float>());
  }
}

void load_flat(const ParameterStore& store, const Tensor& src) {
  store.flat_data().copy_from(src);
}

double learning_rate(int64_t step, double base, int64_t warmup, int64_t total, LrDecay decay) {
  if (warmup > 0 && step < warmup) return base * static_cast<double>(step + 1) / warmup;
  if (decay == LrDecay::Constant || total <= warmup) return base;
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return base * 0.5 * (1.0 + std::cos(M_PI * progress));
}

LrDecay parse_lr_decay(const std::string& name) {
  if (name == "constant") return LrDecay::Constant;
  if (name == "cosine") return LrDecay::Cosine;
  THROW_ERROR("unknown learning-rate decay '" << name << "' (expected constant or cosine)");
}

}  // namespace ddpm
