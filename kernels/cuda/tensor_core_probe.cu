// One warp, one mma.sync after another, each lane's fragments read straight from global
// memory by the PTX ISA's layouts (kernels/cuda/ptx.cuh): the plainest way to ask the tensor
// cores for one product, and nothing else in the way: no shared memory, no ldmatrix, no
// other sum. What it is for: the GPU's bits of a 16 x 8 x K product, against a model of
// the instruction's arithmetic (tests/test_tensor_core_sum.cpp). Speed is no concern here.
#include "kernels/cuda/tensor_core_probe.cuh"

#include "engine/check.h"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

namespace ddpm::cuda {

namespace {

// One warp: lane (g, t) = (lane / 4, lane % 4) holds D's rows g, g + 8 by columns 2t, 2t + 1.
__device__ void load_d(float (&d)[4], const float* c, int g, int t) {
  for (int i = 0; i < 4; ++i) d[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
}
__device__ void store_d(const float (&d)[4], float* out, int g, int t) {
  for (int i = 0; i < 4; ++i) out[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// Two bf16 in a register, the lower k first.
__device__ uint32_t pair(uint16_t lo, uint16_t hi) {
  return uint32_t(lo) | (uint32_t(hi) << 16);
}

// a: (16, K) bf16 bits; b: (K, 8); c, d: (16, 8).
__global__ void probe_bf16_kernel(const uint16_t* a, const uint16_t* b, const float* c,
                                  float* d, int K) {
#if DDPM_HAS_SM80_TENSOR_CORES
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  float acc[4];
  load_d(acc, c, g, t);
  for (int k0 = 0; k0 < K; k0 += 16) {
    const uint16_t* row0 = a + g * K + k0 + 2 * t;  // A[g][k0 + 2t]
    const uint16_t* row8 = row0 + 8 * K;            // A[g + 8][k0 + 2t]
    const uint32_t fa[4] = {pair(row0[0], row0[1]), pair(row8[0], row8[1]),
                            pair(row0[8], row0[9]), pair(row8[8], row8[9])};
    const uint16_t* col = b + (k0 + 2 * t) * 8 + g;  // B[k0 + 2t][g]
    const uint32_t fb[2] = {pair(col[0], col[8]), pair(col[64], col[72])};
    ptx::mma_bf16_16816(acc, fa, fb);
  }
  store_d(acc, d, g, t);
#endif
}

// a: (16, K) fp32; b: (K, 8); c, d: (16, 8).
__global__ void probe_tf32_kernel(const float* a, const float* b, const float* c, float* d,
                                  int K) {
#if DDPM_HAS_SM80_TENSOR_CORES
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  float acc[4];
  load_d(acc, c, g, t);
  for (int k0 = 0; k0 < K; k0 += 8) {
    const float* row0 = a + g * K + k0 + t;  // A[g][k0 + t]
    const float* row8 = row0 + 8 * K;
    const uint32_t fa[4] = {__float_as_uint(row0[0]), __float_as_uint(row8[0]),
                            __float_as_uint(row0[4]), __float_as_uint(row8[4])};
    const float* col = b + (k0 + t) * 8 + g;  // B[k0 + t][g]
    const uint32_t fb[2] = {__float_as_uint(col[0]), __float_as_uint(col[32])};
    ptx::mma_tf32_1688(acc, fa, fb);
  }
  store_d(acc, d, g, t);
#endif
}

void check_probe(int K, int step) {
  CHECK(K > 0 && K <= 1024 && K % step == 0,
        "tensor_core_probe: K must be a positive multiple of " << step << " up to 1024, got "
                                                               << K);
  CHECK(compute_capability() >= 80,
        "tensor_core_probe needs sm_80 or later, this device is sm_" << compute_capability());
}

}  // namespace

// One warp of 32 threads: the instruction is a warp's.
void tensor_core_probe_bf16(const uint16_t* a, const uint16_t* b, const float* c, float* d,
                            int K) {
  check_probe(K, 16);
  DDPM_LAUNCH(probe_bf16_kernel, 1, 32)(a, b, c, d, K);
}

void tensor_core_probe_tf32(const float* a, const float* b, const float* c, float* d, int K) {
  check_probe(K, 8);
  DDPM_LAUNCH(probe_tf32_kernel, 1, 32)(a, b, c, d, K);
}

}  // namespace ddpm::cuda
