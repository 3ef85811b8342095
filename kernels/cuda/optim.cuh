// CUDA optimiser kernels over the flat parameter buffer; same rules as kernels/cpu/optim.h.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cuda {

// With `ema`: its update from the new weights in the same pass.
void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v, float ema_decay = 0.0f, float* ema = nullptr);
void ema_update(int64_t n, float decay, const float* param, float* ema);

// Doubles of scratch sum_of_squares needs; the caller allocates it.
constexpr int kSumOfSquaresWorkspace = 512;
// sum of x^2 in double, deterministic (fixed two-stage order); *result is on the device.
void sum_of_squares(int64_t n, const float* x, double* workspace, double* result);

}  // namespace ddpm::cuda
