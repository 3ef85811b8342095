// CPU reference for the fused diffusion loss: the corruption x_t and the loss with its
// gradient, with eps regenerated from Philox on the fly (kernels/diffusion_loss_math.h has
// the per-element formulas, shared with the CUDA kernels).
//
//   corrupt:  x_t[j, i] = sqrt(abar_t) x0[j, i] + sqrt(1 - abar_t) eps[j, i]
//   loss:     mse_j       = (1/dim) sum_i (pred[j, i] - target[j, i])^2
//             per_sample_j = w_t mse_j                       (what the importance sampler sees)
//             loss        = sum_j (w_t importance_j / n) mse_j
//             dpred[j, i] = 2 (w_t importance_j / n) / dim * (pred - target)   (written, not added)
// One pass over pred (and x0 for the x0 and v targets); sums in double, samples in parallel,
// the batch sum in sample order: deterministic. X0 is T (already in [-1, 1]) or uint8_t
// (NHWC bytes decoded and flipped in-kernel).
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T, class X0>
void diffusion_corrupt(const DiffusionLossShape& s, const DiffusionLossTables<T>& tab,
                       const X0* x0 /* (n, dim) */, T* x_t /* (n, dim) */);

// x0 may be null for the epsilon target (it is not read).
template <class T, class X0>
void diffusion_loss(const DiffusionLossShape& s, const DiffusionLossTables<T>& tab,
                    const T* pred /* (n, dim) */, const X0* x0 /* (n, dim) */,
                    T* dpred /* (n, dim) */, T* per_sample /* (n) */, T* loss /* (1) */);

}  // namespace ddpm::cpu
