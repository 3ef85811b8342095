// CUDA fills from Philox (engine/philox.h): the same pure function of (seed, stream, index)
// as kernels/cpu/random.cpp, so both paths produce the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/step_inputs.h"

namespace ddpm::cuda {

// The stream may live in device memory (StepKey: read once per thread, in the kernel).
void normal_fill(int64_t n, uint64_t seed, StepKey stream, float* y /* (n) */,
                 cudaStream_t cuda_stream);
void uniform_fill(int64_t n, uint64_t seed, StepKey stream, float* y /* (n) */,
                  cudaStream_t cuda_stream);

// Dropout with the mask regenerated from (seed, stream), as kernels/cpu/random.h.
void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y);
void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy, float* dx);
// Sinusoidal timestep embedding, t (N) -> y (N, dim), computed in double as the CPU does.
void timestep_embedding(int64_t n, int64_t dim, const float* t, float* y);

}  // namespace ddpm::cuda
