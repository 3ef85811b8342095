// CPU reference for reductions and the plain mean-squared-error loss.
// Sums accumulate in double whatever T is, in a fixed order (deterministic).
#pragma once

#include <cstdint>

namespace ddpm::cpu {

// y[0] = scale * sum_i x[i]   (scale 1 for sum, 1/n for mean)
template <class T> void sum_forward(int64_t n, T scale, const T* x, T* y /* (1) */);
// dx[i] += scale * dy[0]
template <class T> void sum_backward(int64_t n, T scale, const T* dy /* (1) */, T* dx);

// y[0] = mean_i (pred[i] - target[i])^2
template <class T> void mse_forward(int64_t n, const T* pred, const T* target, T* y /* (1) */);
// g = 2 (pred - target) / n * dy[0];  dpred += g;  dtarget -= g   (either may be null)
template <class T>
void mse_backward(int64_t n, const T* pred, const T* target, const T* dy, T* dpred, T* dtarget);

// Per-sample mean squared error: y[n] = mean_i (pred[n, i] - target[n, i])^2, inner = the
// number of values per sample. Backward: g = 2 (pred - target) / inner * dy[n].
template <class T>
void mse_per_sample_forward(int64_t n, int64_t inner, const T* pred, const T* target,
                            T* y /* (N) */);
template <class T>
void mse_per_sample_backward(int64_t n, int64_t inner, const T* pred, const T* target,
                             const T* dy /* (N) */, T* dpred, T* dtarget);

}  // namespace ddpm::cpu
