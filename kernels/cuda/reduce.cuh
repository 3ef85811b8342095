// CUDA reductions and the plain MSE; same contracts as kernels/cpu/reduce.h (f32).
// Deterministic: fixed-order two-stage sums, no float atomics.
#pragma once

#include <cstdint>

namespace ddpm::cuda {

// Floats of scratch the full sums need (the stage-1 partials); the caller allocates it.
constexpr int kSumWorkspace = 512;

void sum_forward(int64_t n, float scale, const float* x, float* y /* (1) */,
                 float* workspace /* (kSumWorkspace) */);
void sum_backward(int64_t n, float scale, const float* dy /* (1) */, float* dx);
void mse_forward(int64_t n, const float* pred, const float* target, float* y /* (1) */,
                 float* workspace /* (kSumWorkspace) */);
void mse_backward(int64_t n, const float* pred, const float* target, const float* dy,
                  float* dpred, float* dtarget);
void mse_per_sample_forward(int64_t n, int64_t inner, const float* pred, const float* target,
                            float* y /* (N) */);
void mse_per_sample_backward(int64_t n, int64_t inner, const float* pred, const float* target,
                             const float* dy, float* dpred, float* dtarget);

}  // namespace ddpm::cuda
