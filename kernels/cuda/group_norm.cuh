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

// Fused GroupNorm + SiLU (see kernels/cpu/group_norm.h): y = silu(gn(x)); backward
// dh = dy * silu'(h) with h recomputed, then group_norm_backward with dh.
void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd);
void group_norm_silu_dh(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, const float* mean, const float* rstd, const float* dy,
                        float* dh);

}  // namespace ddpm::cuda
