// CUDA group norm with affine; same contract as kernels/cpu/group_norm.h (f32).
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

void group_norm_forward(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, float* y, float* mean, float* rstd);
// dgamma and dbeta are column sums over N*S rows: workspace null (one pass per channel) or
// group_norm_backward_workspace(s) floats (column_sum.cuh).
int64_t group_norm_backward_workspace(const GroupNormShape& s);
void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* workspace = nullptr);

// Dropout after the fused GroupNorm + SiLU, in the same kernels: element i (of the flat
// N*S*C output) is kept when philox_uniform(seed, stream, i) >= p and then scaled by
// 1/(1-p): the dropout op's mask and arithmetic (kernels/cpu/random.h), so the fused op is
// the two ops bit for bit. p = 0: no dropout. The stream may be read from a GPU step's
// StepInputs (kernels/step_inputs.h).
struct DropoutSpec {
  float p = 0.0f;
  uint64_t seed = 0;
  StepKey stream;
};

// Fused GroupNorm + SiLU (see kernels/cpu/group_norm.h): y = silu(gn(x)), then dropout when
// given; backward dh = dropout'(dy) * silu'(h) with h recomputed and the mask regenerated
// (the dropped output never goes to memory twice), then group_norm_backward with dh.
void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd,
                             const DropoutSpec& dropout = {});
void group_norm_silu_dh(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, const float* mean, const float* rstd, const float* dy,
                        float* dh, const DropoutSpec& dropout = {});

}  // namespace ddpm::cuda
