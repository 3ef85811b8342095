// What the kernels' host code asks of the current device, read once per process, and the
// split-K planner the convolution GEMMs share.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"

namespace ddpm::cuda {

// An attribute of the current device, read from the driver (the callers below read each once
// per process).
inline int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, value = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, dev));
  return value;
}

inline int sm_count() {
  static const int count = device_attribute(cudaDevAttrMultiProcessorCount);
  return count;
}

// How many timed runs an autotuner takes the median of (after one warm-up): 5 on a GPU. On
// the CPU emulation 1: its times are the CPU's, each run takes seconds, and the choice is
// made only so that the code making it runs (the emulated test of `cuda_conv: auto` spent
// most of its time in these runs). The bf16 convolution's autotuner also skips its warm-up
// there (kAutotuneWarmUps: a GPU's first launch of a kernel pays for loading it; the
// emulation's costs the same as any other).
#if defined(DDPM_CUDA_EMULATION)
constexpr int kAutotuneTimedRuns = 1;
constexpr int kAutotuneWarmUps = 0;
#else
constexpr int kAutotuneTimedRuns = 5;
constexpr int kAutotuneWarmUps = 1;
#endif

// 10 * major + minor: 80 for A100, 90 for H100/H200.
inline int compute_capability() {
  static const int cc = 10 * device_attribute(cudaDevAttrComputeCapabilityMajor) +
                        device_attribute(cudaDevAttrComputeCapabilityMinor);
  return cc;
}

// The most dynamic shared memory one block may opt in to: 227 KB on H100 / H200, 163 KB on
// A100, 99 KB on sm_86 and sm_89.
inline int max_shared_memory_per_block() {
  static const int bytes = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  return bytes;
}

// Opts `kernel` in to `bytes` of dynamic shared memory where that is more than the 48 KB a
// block gets without asking. For kernels sized to fit every sm_80+ GPU (99 KB a block);
// reserve_shared_memory below checks the device first.
template <class Kernel>
void opt_in_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

// The same, or a stop with both sizes, `what` asked for them (a kernel and its shape) and
// what to do `instead` when the device cannot give a block that much. A kernel sized for
// `blocks_an_sm` > 1 by its shared memory (two of 97 KB in an H100 SM's 228 KB) also asks for
// the most shared memory and the least L1 of the SM's unified memory (the carveout: a hint,
// as CUTLASS sets it), so that the driver does not keep L1 in the second block's place.
template <class Kernel>
void reserve_shared_memory(Kernel kernel, size_t bytes, const std::string& what,
                           const std::string& instead, int blocks_an_sm = 1) {
  const int most = max_shared_memory_per_block();
  CHECK(bytes <= static_cast<size_t>(most), what << " needs " << bytes
                                                 << " bytes of shared memory per block, the "
                                                    "device allows "
                                                 << most << "; " << instead);
  opt_in_shared_memory(kernel, bytes);
  if (blocks_an_sm > 1)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    cudaSharedmemCarveoutMaxShared));
}

// How many blocks of `kernel` (`threads` a block, `bytes` of dynamic shared memory, reserved
// as above for `sized_for` blocks an SM) an SM of the current GPU holds at once: the
// occupancy calculator's answer, from the kernel's registers, its shared memory and its
// threads. A GPU's answer: the CPU emulation, which allocates no registers, refuses.
template <class Kernel>
int resident_blocks(Kernel kernel, int threads, size_t bytes, int sized_for,
                    const std::string& what) {
#if defined(DDPM_CUDA_EMULATION)
  (void)kernel, (void)threads, (void)bytes, (void)sized_for;
  CHECK(false, what << ": the CPU emulation allocates no registers, so only a GPU can say how "
                       "many blocks an SM holds");
  return 0;
#else
  reserve_shared_memory(kernel, bytes, what, "no GPU of this kind has less", sized_for);
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, bytes));
  return blocks;
#endif
}

// `want` slices, held to slices of at least min_slice (so a block's tile loads are
// amortised) and to max_splits (the workspace holds one partial product per slice), at
// least one.
inline int split_k_within(int64_t want, int64_t k, int64_t min_slice, int max_splits) {
  const int64_t most = std::min<int64_t>(max_splits, k / min_slice);
  return static_cast<int>(std::max<int64_t>(1, std::min(want, most)));
}
// How many slices to cut a GEMM's reduction (length k) into when its `tiles` output tiles
// alone cannot fill the GPU: enough blocks for two waves (conv v2 and v3).
inline int split_k_count(int64_t tiles, int64_t k, int64_t min_slice, int max_splits) {
  if (tiles <= 0) return 1;  // an empty output (an empty batch): nothing to split
  return split_k_within((2 * sm_count() + tiles - 1) / tiles, k, min_slice, max_splits);
}

// The same for a kernel that holds `resident` blocks per SM: as many slices as fit in one
// wave (tiles x slices <= resident x SMs), not one more. split_k_count's "at least two
// waves' worth" rounds up, so for a kernel of 2 resident blocks it starts a second wave of
// a few blocks that takes as long as the first (docs/kernels.md, "Split-K in one wave").
inline int split_k_one_wave(int64_t tiles, int64_t k, int64_t min_slice, int max_splits,
                            int resident) {
  if (tiles <= 0) return 1;  // an empty output (an empty batch): nothing to split
  const int64_t fit = resident * static_cast<int64_t>(sm_count()) / tiles;
  return split_k_within(fit, k, min_slice, max_splits);
}

}  // namespace ddpm::cuda
