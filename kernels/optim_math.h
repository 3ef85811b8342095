// The per-element arithmetic of the optimiser kernels, shared by the CPU reference
// (kernels/cpu/optim.cpp) and the CUDA kernels (kernels/cuda/optim.cu), so both evaluate the
// same expressions in the same order (nvcc may still contract a * b + c into one fma: a few
// ulp, which the CUDA tests allow).
//
// AdamW (Loshchilov & Hutter, decoupled weight decay), in PyTorch's form:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
// EMA of the weights, after the update: e = decay e + (1 - decay) p = (1 - r) e + r p.
// Clipping by global norm is folded into the update: the gradient AdamW reads is
// g = float(clip_scale) * grad, the product scale_in_place would have stored, so clipping
// costs no pass of its own; a step whose gate says "not applied" changes nothing. The gate
// also carries the bias corrections (step_gate keeps the count of applied steps).
#pragma once

#include <cmath>

#include "kernels/host_device.h"
#include "kernels/rounding.h"
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
  m = p.beta1 * m + p.one_minus_beta1 * g;
  v = p.beta2 * v + p.one_minus_beta2 * g * g;
  param = param * k.decay - k.step * m / (sqrtf(v) * k.inv_sqrt_bc2 + p.eps);
}

// How a refused step is taken: skipped (training goes on) or halting (training stops, and
// every later gate refuses too: kernels/shapes.h StepCounters).
enum class Refusal : int { Skip = 0, Halt = 1 };

// What a step's gate is judged by: the clipping norm (<= 0: no clipping), AdamW's betas (for
// the bias corrections) and what a refusal does.
struct StepSummaryRule {
  double max_norm = 0, beta1 = 0.9, beta2 = 0.999;
  Refusal refusal = Refusal::Skip;
};

// Advances the counters by one applied step: beta^t by one more multiplication, rounded on
// its own (mul_rn: nvcc may not fuse it with the 1 - beta^t after it), so the host's count
// (AdamW's) and the device's hold the same bits.
DDPM_HD void count_applied_step(StepCounters& c, double beta1, double beta2) {
  c.steps += 1;
  c.beta1_power = mul_rn(c.beta1_power, beta1);
  c.beta2_power = mul_rn(c.beta2_power, beta2);
}

// The gate of a step (kernels/shapes.h StepGate) from its loss and the sum of the squares of
// its gradient: clip when max_norm > 0 and the norm exceeds it, apply only when finite and
// no earlier refusal has halted training; the counters advance when the step is applied.
DDPM_HD StepGate step_gate(double loss, double sum_of_squares, const StepSummaryRule& rule,
                           StepCounters& c) {
  const double max_norm = rule.max_norm;
  StepGate g;
  g.loss = loss;
  g.grad_norm = sqrt(sum_of_squares);
  // x - x is 0 for every finite x and NaN for inf and NaN (no library call, host or device).
  g.clip_scale = max_norm > 0 && g.grad_norm > max_norm ? max_norm / g.grad_norm : 1.0;
  const bool finite = loss - loss == 0.0 && g.grad_norm - g.grad_norm == 0.0;
  g.applied = finite && c.halted == 0 ? 1.0 : 0.0;
  if (g.applied != 0)
    count_applied_step(c, rule.beta1, rule.beta2);
  else if (rule.refusal == Refusal::Halt)
    c.halted = 1;
  g.bias_correction1 = 1.0 - c.beta1_power;
  g.bias_correction2 = 1.0 - c.beta2_power;
  return g;
}

// Stores a gate as kernels/shapes.h lays it out: six doubles at out.
DDPM_HD void store_step_gate(const StepGate& g, double* out) {
  out[0] = g.loss;
  out[1] = g.grad_norm;
  out[2] = g.clip_scale;
  out[3] = g.applied;
  out[4] = g.bias_correction1;
  out[5] = g.bias_correction2;
}

// The constants of a gated update: the gate's bias corrections replace the caller's.
DDPM_HD AdamWParams gated_params(AdamWParams p, const StepGate* gate) {
  if (gate) {
    p.bias_correction1 = static_cast<float>(gate->bias_correction1);
    p.bias_correction2 = static_cast<float>(gate->bias_correction2);
  }
  return p;
}

// The EMA's step travels as its rate r = 1 - decay, rounded from the double: a decay within
// float's spacing of 1 (0.99999999) is 1.0f, and 1.0f - decay would freeze the average.
// 1.0f - r is the float nearest 1 - r: decay itself, as near as a float can hold it.
DDPM_HD float ema_element(float rate, float ema, float param) {
  return (1.0f - rate) * ema + rate * param;
}

}  // namespace ddpm
