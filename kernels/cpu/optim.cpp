#include "kernels/cpu/optim.h"

#include "kernels/optim_math.h"

#include <cmath>

namespace ddpm::cpu {

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v, float ema_rate, float* ema, const StepGate* gate) {
  if (gate && gate->applied == 0) return;
  const AdamWParams q = gated_params(p, gate);
  const AdamWStepConstants k = adamw_step_constants(q);
  const float scale = gate ? static_cast<float>(gate->clip_scale) : 1.0f;
  if (ema == nullptr) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) adamw_element(q, k, grad[i] * scale, m[i], v[i], param[i]);
  } else {  // the EMA in the same pass, from the updated parameter
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      adamw_element(q, k, grad[i] * scale, m[i], v[i], param[i]);
      ema[i] = ema_element(ema_rate, ema[i], param[i]);
    }
  }
}

void ema_update(int64_t n, float rate, const float* param, float* ema) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) ema[i] = ema_element(rate, ema[i], param[i]);
}

double sum_of_squares(int64_t n, const float* x) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * x[i];
  return acc;
}

}  // namespace ddpm::cpu
