// CPU reference for the optimiser kernels, each one pass over the flat parameter buffer.
//
// AdamW (Loshchilov & Hutter, decoupled weight decay), in PyTorch's form:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * wd * p
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
// EMA: e = decay e + (1 - decay) p.
// Global norm: sum of squares, accumulated in double in a fixed order.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cpu {

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v);
void ema_update(int64_t n, float decay, const float* param, float* ema);
double sum_of_squares(int64_t n, const float* x);

}  // namespace ddpm::cpu
