#include "engine/optim.h"

#include <cmath>

#include "engine/ops.h"
#include "kernels/cpu/optim.h"

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

void AdamW::step(double lr, Ema* ema, int64_t ema_index) {
  ++t_;
  AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(config_.beta1);
  p.beta2 = static_cast<float>(config_.beta2);
  p.eps = static_cast<float>(config_.eps);
  p.weight_decay = static_cast<float>(config_.weight_decay);
  p.bias_correction1 = static_cast<float>(1.0 - std::pow(config_.beta1, static_cast<double>(t_)));
  p.bias_correction2 = static_cast<float>(1.0 - std::pow(config_.beta2, static_cast<double>(t_)));
  const Tensor flat = store_.flat_data();
  const float ema_decay = ema ? ema->decay_at(ema_index) : 0.0f;
  float* const ema_weights = ema ? ema->weights().data<float>() : nullptr;
  if (on_gpu(flat)) {
#if DDPM_WITH_CUDA
    cuda::adamw_step(flat.numel(), p, flat.data<float>(), store_.flat_grad().data<float>(),
                     m_.data<float>(), v_.data<float>(), ema_decay, ema_weights);
#endif
  } else {
    cpu::adamw_step(flat.numel(), p, flat.data<float>(), store_.flat_grad().data<float>(),
                    m_.data<float>(), v_.data<float>(), ema_decay, ema_weights);
  }
}

double clip_grad_norm(const ParameterStore& store, double max_norm) {
  require_f32("clip_grad_norm", store);
  const Tensor grad = store.flat_grad();
  double squares = 0;
  if (on_gpu(grad)) {
#if DDPM_WITH_CUDA
    const Tensor scratch =
        Tensor::empty(Shape{2 * (cuda::kSumOfSquaresWorkspace + 1)}, DType::F32, Device::CUDA);
    double* ws = static_cast<double*>(scratch.raw());
    cuda::sum_of_squares(grad.numel(), grad.data<float>(), ws, ws + cuda::kSumOfSquaresWorkspace);
    device_copy(&squares, Device::CPU, ws + cuda::kSumOfSquaresWorkspace, Device::CUDA, sizeof(double));
#endif
  } else {
    squares = cpu::sum_of_squares(grad.numel(), grad.data<float>());
  }
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

float Ema::decay_at(int64_t k) const {
  return static_cast<float>(warmup_ ? std::min(decay_, (1.0 + k) / (10.0 + k)) : decay_);
}

void Ema::update(int64_t k) {
  const float d = decay_at(k);
  const Tensor flat = store_.flat_data();
  if (on_gpu(flat)) {
#if DDPM_WITH_CUDA
    cuda::ema_update(flat.numel(), d, flat.data<float>(), shadow_.data<float>());
#endif
  } else {
    cpu::ema_update(flat.numel(), d, flat.data<float>(), shadow_.data<float>());
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
