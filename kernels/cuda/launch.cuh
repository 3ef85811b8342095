// Launch helpers shared by the CUDA kernel files: the grid for a 1-D elementwise loop, and
// the warp/block sum used by the reductions.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ddpm::cuda {

// 256 threads per block: 8 warps, enough to hide memory latency on every current GPU while
// leaving registers to spare; elementwise kernels are bandwidth-bound, so the exact value
// matters little (llm.c and PyTorch use 256-512).
constexpr int kThreads = 256;

// Blocks for n elements with a grid-stride loop: enough to fill the GPU many times over
// (132 SMs x 16 resident blocks on an H100 is ~2k; 65535 is the portable y/z limit and
// far beyond what a stride loop needs).
inline unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)));
}

// for (i = global thread index; i < n; i += total threads): the loop every elementwise
// kernel uses, so any n runs on the grid grid_for() gives.
#define DDPM_GRID_STRIDE(i, n)                                                              \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Sum of v over the warp (every lane gets the result). Butterfly order: fixed, so the
// result does not depend on timing.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

}  // namespace ddpm::cuda
