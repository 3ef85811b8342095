// Group norm (and the fused GN + SiLU) on the CPU in float, vectorised: the fast path beside
// the reference kernels/cpu/group_norm.h (same contract; backward accumulates).
//
// The reference walks each group's values, C/G contiguous channels every C floats, and sums
// in double: exact, and slow for small groups. Here statistics are gathered per channel
// first, a pixel row of C contiguous floats at a time (the loop the compiler vectorises),
// then added within each group; the normalisation is then one multiply-add per value with
// per-channel coefficients: y = x a_c + b_c, a_c = rstd_g gamma_c, b_c = beta_c - mean_g a_c.
// The backward pass is written the same way: dx = dy A_c + x B_c + C_c per channel, and
// dgamma, dbeta from per-sample channel sums of dy and dy x. Float sums over one sample's
// pixels (at most a few thousand per channel); samples run in parallel, their partial sums
// added in sample order: deterministic for any thread count.
#pragma once

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cpu_fast {

void group_norm_forward(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, float* y, float* mean, float* rstd);
void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd);
// dx += the gradient, or dx = it with GradWrite::Assign (kernels/grad_write.h)
void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, GradWrite dx_write = GradWrite::Accumulate);
// The fused GN + SiLU's backward from dy, the gradient of its output: per sample, one pass
// turns dy into dh = dy silu'(h) (into a buffer of one sample) and sums dh and dh x per
// channel, a second writes dx from dh. The unfused chain (dh for the whole batch, then
// group_norm_backward) reads and writes dh three more times.
void group_norm_silu_backward(const GroupNormShape& s, const float* x, const float* gamma,
                              const float* beta, const float* mean, const float* rstd,
                              const float* dy, float* dx, float* dgamma, float* dbeta,
                              GradWrite dx_write = GradWrite::Accumulate);

}  // namespace ddpm::cpu_fast
