// The per-element arithmetic of the optimiser kernels, shared by the CPU reference
// (kernels/cpu/optim.cpp) and the CUDA kernels (kernels/cuda/optim.cu), so both evaluate the
// same expressions in the same order (nvcc may still contract a * b + c into one fma: a few
// ulp, which the CUDA tests allow).
//
// AdamW (Loshchilov & Hutter, decoupled weight decay), in PyTorch's form:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
// EMA of the weights, after the update: e = decay e + (1 - decay) p.
#pragma once

#include <cmath>

#include "kernels/host_device.h"
#include "kernels/shapes.h"

namespace ddpm {

// What every element of one AdamW step shares.
struct AdamWStepConstants {
  float step, inv_sqrt_bc2, decay;
};

DDPM_HD AdamWStepConstants adamw_step_constants(const AdamWParams& p) {
  return {p.lr / p.bias_correction1, 1.0f / sqrtf(p.bias_correction2),
          1.0f - p.lr * p.weight_decay};
}

// One element: updates m, v and the parameter from the gradient g.
DDPM_HD void adamw_element(const AdamWParams& p, const AdamWStepConstants& k, float g, float& m,
                           float& v, float& param) {
  m = p.beta1 * m + (1.0f - p.beta1) * g;
  v = p.beta2 * v + (1.0f - p.beta2) * g * g;
  param = param * k.decay - k.step * m / (sqrtf(v) * k.inv_sqrt_bc2 + p.eps);
}

DDPM_HD float ema_element(float decay, float ema, float param) {
  return decay * ema + (1.0f - decay) * param;
}

}  // namespace ddpm
