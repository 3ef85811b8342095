// CPU reference for group norm with affine, x (N, S, C) channels-last.
//
//   mean, var over the S * C/G values of each (sample, group)   (biased variance)
//   y = (x - mean) * rstd * gamma[c] + beta[c],  rstd = 1/sqrt(var + eps)
//
// Statistics are accumulated in double (two passes: mean, then squared deviations) so the
// float reference is as exact as float storage allows. mean and rstd (N, G) are saved for
// the backward pass:
//   xhat = (x - mean) rstd,  g = dy * gamma
//   dx += rstd * (g - mean_group(g) - xhat * mean_group(g * xhat))
//   dgamma[c] += sum_{n,s} dy * xhat,   dbeta[c] += sum_{n,s} dy
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T>
void group_norm_forward(const GroupNormShape& s, const T* x /* (N,S,C) */,
                        const T* gamma /* (C) */, const T* beta /* (C) */, T* y /* (N,S,C) */,
                        T* mean /* (N,G) */, T* rstd /* (N,G) */);

// Accumulates into whichever of dx, dgamma, dbeta is non-null.
template <class T>
void group_norm_backward(const GroupNormShape& s, const T* x, const T* gamma, const T* mean,
                         const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta);

// The fused GroupNorm + SiLU that every U-Net block starts with:
//   forward   y = silu(h), h = xhat * gamma + beta      (h is never stored)
//   backward  dh = dy * silu'(h), h recomputed from x, mean, rstd, gamma, beta
//             (group_norm_silu_dh), then group_norm_backward with dh.
template <class T>
void group_norm_silu_forward(const GroupNormShape& s, const T* x, const T* gamma, const T* beta,
                             T* y, T* mean, T* rstd);
// dh (N,S,C) = dy * silu'(h): overwrites dh.
template <class T>
void group_norm_silu_dh(const GroupNormShape& s, const T* x, const T* gamma, const T* beta,
                        const T* mean, const T* rstd, const T* dy, T* dh);

}  // namespace ddpm::cpu
