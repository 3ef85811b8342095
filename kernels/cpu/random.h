// CPU reference for everything drawn from Philox (engine/philox.h): normal and uniform
// fills, dropout, and the sinusoidal timestep embedding (no randomness, but like the others
// a generator of values rather than a transform of an input gradient).
//
// Dropout keeps element i when philox_uniform(seed, stream, i) >= p and scales it by 1/(1-p).
// The mask is never stored: backward regenerates it from (seed, stream), so the mask of a
// step is reproducible from the run's seed and the step's stream id.
#pragma once

#include <cstdint>

namespace ddpm::cpu {

void normal_fill(int64_t n, uint64_t seed, uint64_t stream, float* y);   // y[i] = N(0,1)_i
void uniform_fill(int64_t n, uint64_t seed, uint64_t stream, float* y);  // y[i] in [0,1)

template <class T>
void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const T* x, T* y);
// dx += mask * dy / (1 - p)
template <class T>
void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const T* dy, T* dx);

// DDPM's sinusoidal embedding: half = dim/2, f_i = exp(-ln(10000) i / (half - 1)),
// y[n] = [sin(t_n f_0..f_{half-1}), cos(t_n f_0..f_{half-1})]. dim even, >= 4.
template <class T>
void timestep_embedding(int64_t n, int64_t dim, const T* t /* (N) */, T* y /* (N, dim) */);

}  // namespace ddpm::cpu
