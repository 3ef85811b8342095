// CUDA optimiser kernels over the flat parameter buffer; same rules as kernels/cpu/optim.h.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cuda {

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v);
void ema_update(int64_t n, float decay, const float* param, float* ema);

// Doubles of scratch sum_of_squares needs; the caller allocates it.
constexpr int kSumOfSquaresWorkspace = 512;
// sum of x^2 in double, deterministic (fixed two-stage order); *result is on the device.
void sum_of_squares(int64_t n, const float* x, double* workspace, double* result);

}  // namespace ddpm::cuda
