// What the kernels' host code asks of the current device, read once per process, and the
// split-K planner the convolution GEMMs share.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

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

// How many timed runs an autotuner takes the median of, after the checked run that is also
// a candidate's warm-up (kernels/cuda/autotune_check.cuh): 5 on a GPU. On the CPU
// emulation 1, the checked run itself (kAutotuneWarmUps 0): its times are the CPU's, each
// run takes seconds, and the choice is made only so that the code making it runs (the
// emulated test of `cuda_conv: auto` spent most of its time in these runs). A GPU's first
// launch of a kernel pays for loading it; the emulation's costs the same as any other.
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

// The carveout: an SM's L1 and shared memory are one array (256 KB on H100 / H200, 192 KB on
// A100), split per kernel at one of a few shared-memory capacities, in KB, by compute
// capability (the CUDA Programming Guide's and the Ampere / Hopper tuning guides' lists);
// empty for a device they do not list.
inline std::vector<int> shared_capacities_kb(int cc) {
  if (cc == 90) return {0, 8, 16, 32, 64, 100, 132, 164, 196, 228};
  if (cc == 80 || cc == 87) return {0, 8, 16, 32, 64, 100, 132, 164};
  if (cc == 86 || cc == 89) return {0, 8, 16, 32, 64, 100};
  return {};
}
// A kernel states its preference as a percent of the most shared memory an SM has
// (shared_per_sm), and the driver takes the next capacity at or above that many bytes; it is
// a hint. carveout_percent: a percent that lands on the least capacity holding `blocks`
// blocks of `bytes` each plus the system's `reserved` per block, so that the blocks fit and
// everything else stays L1 (the convolutions' gathers go through L1: conv2d_bf16.cu). It
// asks for floor(100 capacity / shared_per_sm) percent: at most the capacity, and above the
// capacity below it (capacities lie at least 8 KB apart, a percent at most 2.3 KB). Rounding
// the need itself up instead would miss a need that is exactly a capacity (two blocks of 97
// KB and the 1 KB reserve, 196 KB): 86% of 228 KB is past 196, so the driver would take 228.
// A device with no list, or blocks needing more than its largest capacity: the need rounded
// up, at most 100 (shared memory first: a lost block costs more than a smaller L1).
inline int carveout_percent(int blocks, size_t bytes, size_t reserved, size_t shared_per_sm,
                            const std::vector<int>& capacities_kb) {
  const size_t need = static_cast<size_t>(blocks) * (bytes + reserved);
  for (int kb : capacities_kb) {
    const size_t capacity = static_cast<size_t>(kb) * 1024;
    if (capacity >= need && capacity <= shared_per_sm)
      return static_cast<int>(100 * capacity / shared_per_sm);
  }
  if (need >= shared_per_sm) return 100;
  return static_cast<int>((100 * need + shared_per_sm - 1) / shared_per_sm);
}

// Sets `kernel`'s carveout (above) to hold `blocks` blocks of `bytes` dynamic shared memory
// and to leave the rest of the SM to L1. Without it the driver chooses, and may keep shared
// memory that no block uses in L1's place.
template <class Kernel>
void leave_rest_to_l1(Kernel kernel, int blocks, size_t bytes) {
  static const int per_sm = device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor);
  static const int reserved = device_attribute(cudaDevAttrReservedSharedMemoryPerBlock);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  carveout_percent(blocks, bytes, reserved, per_sm,
                                                   shared_capacities_kb(compute_capability()))));
}

// leave_rest_to_l1 for as many blocks as an SM holds at once: the occupancy calculator's
// count from the kernel's registers, threads and `bytes` (so that no block the registers
// allow is lost to a small carveout), or, on the CPU emulation, which allocates no
// registers, `bounded` (the count the kernel's launch bounds ask for).
template <class Kernel>
void leave_rest_to_l1_of_resident(Kernel kernel, int threads, size_t bytes, int bounded) {
  int blocks = bounded;
#if !defined(DDPM_CUDA_EMULATION)
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, bytes));
#else
  (void)threads;
#endif
  leave_rest_to_l1(kernel, std::max(blocks, 1), bytes);
}

// The same, or a stop with both sizes, `what` asked for them (a kernel and its shape) and
// what to do `instead` when the device cannot give a block that much. A kernel sized for
// `blocks_an_sm` > 1 blocks by its shared memory (two of ~97 KB in an H100 SM's 228 KB) also
// sets its carveout for them (leave_rest_to_l1): so that the driver does not keep L1 in the
// second block's place, and no more, so that a kernel whose loads go through L1 keeps the
// rest. (Others are left to the driver: a flash kernel of a small head may fit more blocks
// than one.)
template <class Kernel>
void reserve_shared_memory(Kernel kernel, size_t bytes, const std::string& what,
                           const std::string& instead, int blocks_an_sm = 1) {
  const int most = max_shared_memory_per_block();
  CHECK(bytes <= static_cast<size_t>(most), what << " needs " << bytes
                                                 << " bytes of shared memory per block, the "
                                                    "device allows "
                                                 << most << "; " << instead);
  opt_in_shared_memory(kernel, bytes);
  if (blocks_an_sm > 1) leave_rest_to_l1(kernel, blocks_an_sm, bytes);
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
