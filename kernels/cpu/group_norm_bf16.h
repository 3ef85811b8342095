// CPU reference for group norm with bf16 storage (the CUDA kernels' *_bf16 entries,
// kernels/cuda/group_norm.cuh): activations stored as bf16 bits (uint16_t, kernels/bf16.h),
// decoded to fp32, the fp32 reference kernels (kernels/cpu/group_norm.h, and dropout's
// kernels/cpu/random.h) run on them, and each stored activation rounded to bf16 once
// (nearest, ties to even). Statistics, gamma, beta, dgamma and dbeta stay fp32; dx
// accumulates: dx = bf16(float(dx) + the gradient). Dropout (p > 0) after the SiLU as in
// the fused op, with the mask of philox_uniform(seed, stream, i) >= p.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cpu {

struct DropoutKeys {
  float p = 0.0f;
  uint64_t seed = 0, stream = 0;
};

void group_norm_forward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, uint16_t* y, float* mean, float* rstd, bool silu,
                             const DropoutKeys& dropout = {});
void group_norm_silu_dh_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd,
                             const uint16_t* dy, uint16_t* dh, const DropoutKeys& dropout = {});
void group_norm_backward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                              const float* mean, const float* rstd, const uint16_t* dy,
                              uint16_t* dx, float* dgamma, float* dbeta);

}  // namespace ddpm::cpu
