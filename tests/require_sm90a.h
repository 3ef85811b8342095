// Skips a test that needs Hopper's wgmma (kernels/cuda/ptx_sm90.cuh) where it cannot run,
// saying why: no GPU (REQUIRE_GPU), or one that is not compute capability 9.0, or a binary
// without sm_90a code. With DDPM_REQUIRE_GPU=1 on a 9.0 GPU the last is a failure: a GPU
// session on an H100 must not pass these tests by skipping them.
#pragma once

#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"

#define REQUIRE_SM90A()                                                                    \
  do {                                                                                     \
    REQUIRE_GPU();                                                                         \
    if (!::ddpm::cuda::gemm_sm90_available()) {                                            \
      if (::ddpm::test::gpu_required() && ::ddpm::cuda::compute_capability() == 90)        \
        FAIL() << "a compute capability 9.0 GPU, but the binary has no sm_90a code";       \
      GTEST_SKIP() << "needs a GPU of compute capability 9.0 (H100, H200); this one is "   \
                   << ::ddpm::cuda::compute_capability();                                  \
    }                                                                                      \
  } while (0)
#else
#define REQUIRE_SM90A() REQUIRE_GPU()
#endif
