// What the kernels' host code asks of the current device, read once per process, and the
// split-K planner the convolution GEMMs share.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda_check.h"

namespace ddpm::cuda {

inline int sm_count() {
  static const int count = [] {
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms;
  }();
  return count;
}

// 10 * major + minor: 80 for A100, 90 for H100/H200.
inline int compute_capability() {
  static const int cc = [] {
    int dev = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return 10 * major + minor;
  }();
  return cc;
}

// How many slices to cut a GEMM's reduction (length k) into when its `tiles` output tiles
// alone cannot fill the GPU: enough blocks for two waves, each slice at least `min_slice`
// long (so a block's tile loads are amortised), at most `max_splits` (the workspace holds
// one partial product per slice).
inline int split_k_count(int64_t tiles, int64_t k, int64_t min_slice, int max_splits) {
  const int64_t want = (2 * sm_count() + tiles - 1) / tiles;
  const int64_t most = std::min<int64_t>(max_splits, k / min_slice);
  return static_cast<int>(std::max<int64_t>(1, std::min(want, most)));
}

}  // namespace ddpm::cuda
