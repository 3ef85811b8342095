// CUDA fills from Philox (engine/philox.h): the same pure function of (seed, stream, index)
// as kernels/cpu/random.cpp, so both paths produce the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ddpm::cuda {

void normal_fill(int64_t n, uint64_t seed, uint64_t stream, float* y /* (n) */,
                 cudaStream_t cuda_stream);
void uniform_fill(int64_t n, uint64_t seed, uint64_t stream, float* y /* (n) */,
                  cudaStream_t cuda_stream);

}  // namespace ddpm::cuda
