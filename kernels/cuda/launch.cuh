// Launch helpers shared by the CUDA kernel files: how every kernel is launched and checked,
// the grid for a 1-D elementwise loop, and the warp/block sum used by the reductions.
//
// The kernel files compile two ways: with nvcc for a GPU, and as host C++ against the CPU
// emulation of tests/cuda_emulation (DDPM_CUDA_EMULATION), so the same kernels run in CI
// under the sanitizers. Two things differ in source between the two, and both live here:
// the launch (DDPM_LAUNCH) and dynamic shared memory (DDPM_DYNAMIC_SHARED).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "engine/check.h"
#include "engine/cuda_stream.h"

namespace ddpm {
void count_kernel_launch();  // engine/device.cpp: feeds device_work_counts()
}  // namespace ddpm

namespace ddpm::cuda {

// ---- launching ----------------------------------------------------------------------------
// Every launch in the engine is written
//     DDPM_LAUNCH(kernel, grid, block[, shared_bytes[, stream]])(arguments...);
// which is kernel<<<grid, block, shared_bytes, stream>>>(arguments...), then the launch check
// (an invalid configuration throws, naming the kernel and the line that launched it) and the
// launch count (device_work_counts). Under the CPU emulation the same line runs the kernel on
// host threads. A kernel whose template arguments hold a comma goes in parentheses:
//     DDPM_LAUNCH((loss_kernel<X0, true>), grid, kThreads)(...);
#define DDPM_LAUNCH(kernel, ...) \
  ::ddpm::cuda::KernelLaunch(kernel, #kernel, __FILE__, __LINE__, __VA_ARGS__)

template <class... Params>
class KernelLaunch {
 public:
  KernelLaunch(void (*kernel)(Params...), const char* name, const char* file, int line, dim3 grid,
               dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr)
      : kernel_(kernel), name_(name), file_(file), line_(line), grid_(grid), block_(block),
        shared_bytes_(shared_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    // One stream, the engine's (engine/cuda_stream.h): the caching allocator
    // (engine/cuda_allocator.h) hands a freed block to the next request at once, which is
    // safe only while all work is ordered on one stream. No stream given: the engine's.
    const cudaStream_t stream = stream_ != nullptr ? stream_ : engine_stream();
    CHECK(stream == engine_stream(), "launching " << name_ << " on a stream other than the "
                                     "engine's: the caching allocator is single-stream "
                                     "(engine/cuda_allocator.h)");
#if DDPM_CUDA_EMULATION
    cuda_emu::launch(name_, file_, line_, kernel_, grid_, block_, shared_bytes_, stream,
                     std::forward<Args>(args)...);
#else
    kernel_<<<grid_, block_, shared_bytes_, stream>>>(std::forward<Args>(args)...);
#endif
    count_kernel_launch();
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
      throw_error(file_, line_,
                  std::string("CUDA error ") + cudaGetErrorName(status) + ": " +
                      cudaGetErrorString(status) + " (launching " + name_ + ")",
                  nullptr);
  }

 private:
  void (*kernel_)(Params...);
  const char* name_;
  const char* file_;
  int line_;
  dim3 grid_, block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
};

// Dynamic shared memory of `type`, sized by the launch: extern __shared__ on a GPU, the
// emulated block's exact-size buffer under the emulation.
#if DDPM_CUDA_EMULATION
#define DDPM_DYNAMIC_SHARED(type, name) \
  type* name = static_cast<type*>(::cuda_emu::dynamic_shared_memory())
#else
#define DDPM_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

// Code for tensor-core instructions of sm_80 (TF32 WMMA): compiled for such devices, and
// under the emulation, which implements them (tests/cuda_emulation/wmma.h).
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || DDPM_CUDA_EMULATION
#define DDPM_HAS_SM80_TENSOR_CORES 1
#else
#define DDPM_HAS_SM80_TENSOR_CORES 0
#endif

// ---- grids and block-wide sums ------------------------------------------------------------

// 256 threads per block: 8 warps, enough to hide memory latency on every current GPU while
// leaving registers to spare; elementwise kernels are bandwidth-bound, so the exact value
// matters little (llm.c and PyTorch use 256-512).
constexpr int kThreads = 256;

// Blocks for n elements with a grid-stride loop: one per kThreads elements, at least one and
// at most max_blocks (65535 by default: enough to fill the GPU many times over, 132 SMs x 16
// resident blocks on an H100 being ~2k, and the portable y/z limit; a two-stage reduction
// passes its number of partials).
inline unsigned grid_for(int64_t n, int64_t max_blocks = 65535) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks)));
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

// The max of v over the warp (every lane gets the result), in the same butterfly order.
__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
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

// The max of v over the block, as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  v = warp_max(v);
  __syncthreads();  // scratch may still be read by a previous call
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmaxf(m, scratch[w]);
  return m;
}

}  // namespace ddpm::cuda
