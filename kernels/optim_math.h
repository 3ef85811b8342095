// The per-element arithmetic of the optimiser kernels, shared by the CPU reference
// (kernels/cpu/optim.cpp) and the CUDA kernels (kernels/cuda/optim.cu), so both evaluate the
// same expressions in the same order (nvcc may still contract a * b + c into one fma: a few
// ulp, which the CUDA tests allow).
//
// AdamW (Loshchilov & Hutter, decoupled weight decay), in PyTorch's form:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
// EMA of the weights, after the update: e = decay e + (1 - decay) p.
// Clipping by global norm is folded into the update: the gradient AdamW reads is
// g = float(clip_scale) * grad, the product scale_in_place would have stored, so clipping
// costs no pass of its own; a step whose gate says "not applied" changes nothing.
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

// The gate of a step (kernels/shapes.h StepGate) from its loss and the sum of the squares of
// its gradient: clip when max_norm > 0 and the norm exceeds it, apply only when finite.
DDPM_HD StepGate step_gate(double loss, double sum_of_squares, double max_norm) {
  StepGate g;
  g.loss = loss;
  g.grad_norm = sqrt(sum_of_squares);
  // x - x is 0 for every finite x and NaN for inf and NaN (no library call, host or device).
  g.clip_scale = max_norm > 0 && g.grad_norm > max_norm ? max_norm / g.grad_norm : 1.0;
  g.applied = loss - loss == 0.0 && g.grad_norm - g.grad_norm == 0.0 ? 1.0 : 0.0;
  return g;
}

// Stores a gate as kernels/shapes.h lays it out: four doubles at out.
DDPM_HD void store_step_gate(const StepGate& g, double* out) {
  out[0] = g.loss;
  out[1] = g.grad_norm;
  out[2] = g.clip_scale;
  out[3] = g.applied;
}

DDPM_HD float ema_element(float decay, float ema, float param) {
  return decay * ema + (1.0f - decay) * param;
}

}  // namespace ddpm
