#include "kernels/cpu/optim.h"

#include <cmath>

namespace ddpm::cpu {

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v) {
  const float step = p.lr / p.bias_correction1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(p.bias_correction2);
  const float decay = 1.0f - p.lr * p.weight_decay;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m[i] = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    param[i] = param[i] * decay - step * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + p.eps);
  }
}

void ema_update(int64_t n, float decay, const float* param, float* ema) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) ema[i] = decay * ema[i] + (1.0f - decay) * param[i];
}

double sum_of_squares(int64_t n, const float* x) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * x[i];
  return acc;
}

}  // namespace ddpm::cpu
