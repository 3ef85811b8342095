// v3 of the convolution GEMM (kernels/cuda/conv2d.cu): the tiled implicit GEMM of v2 with
// the inner product on tensor cores in TF32, through the warp-level WMMA API.
//
// Block: a 64x64 tile of C with 128 threads = 4 warps in a 2x2 arrangement; each warp owns a
// 32x32 sub-tile as 2x2 accumulator fragments of 16x16 (fp32). K advances 16 at a time: the
// block stages a 64x16 tile of A and a 16x64 tile of B in shared memory through the same
// loaders as v1/v2 (so forward, dgrad and wgrad all come for free, padding and stride
// included), then each warp runs two k = 8 steps of mma_sync on fragments loaded from shared
// memory. The epilogue stores the fragments to a shared C tile and writes it out coalesced,
// with the bias (forward) or accumulating (backward), or to a split-K plane.
//
// TF32 keeps fp32's range but rounds each operand to a 10-bit mantissa (relative error
// 2^-11); products accumulate in fp32. The result differs from the fp32 path by ~1e-3 of
// the output's magnitude (tests/test_cuda_ops.cpp bounds it); it is what cuDNN and PyTorch
// use for fp32 convolutions on Ampere and later by default. Deterministic: every fragment
// sums in a fixed order. Needs sm_80 or later (the kernel body is empty below that; the
// host side refuses such devices).
//
// Shared-memory strides: WMMA wants a leading dimension that is a multiple of 4 floats and
// fragment pointers aligned to 32 bytes; 20 (A) and 68 (B, C) satisfy both and are not
// multiples of 32, which spreads a fragment's rows over the banks.
#pragma once

#include <mma.h>

#include "kernels/cuda/launch.cuh"

namespace ddpm::cuda {

constexpr int kTcTile = 64;     // C tile, both dimensions (v2's small tiles; conv2d.cu)
constexpr int kTcK = 16;        // K per shared-memory stage: two mma k-steps
constexpr int kTcThreads = 128; // 4 warps, 2x2 over the tile
constexpr int kTcLdA = kTcK + 4, kTcLdB = kTcTile + 4;
static_assert(kTcTile * kTcK % kTcThreads == 0, "each thread stages whole elements");

template <class LoadA, class LoadB>
__global__ void __launch_bounds__(kTcThreads)
gemm_tensor_core(int64_t m, int64_t n, int64_t k, int64_t k_slice, LoadA a, LoadB b,
                 const float* bias, float* c, bool accumulate) {
#if DDPM_HAS_SM80_TENSOR_CORES
  using namespace nvcuda;
  __shared__ __align__(32) float as[kTcTile][kTcLdA];  // A tile, row-major (m, k)
  __shared__ __align__(32) float bs[kTcK][kTcLdB];     // B tile, row-major (k, n)
  __shared__ __align__(32) float cs[kTcTile][kTcLdB];  // C tile for the epilogue
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTcTile;  // grid: (m, n, split) tiles
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kTcTile;
  const int64_t k_begin = blockIdx.z * k_slice;
  const int64_t k_end = k_begin + k_slice < k ? k_begin + k_slice : k;
  if (gridDim.z > 1) c += blockIdx.z * m * n;

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTcK) {
    for (int e = threadIdx.x; e < kTcTile * kTcK; e += kTcThreads) {
      const int ar = e / kTcK, ak = e % kTcK;  // consecutive threads: consecutive k of A
      const int64_t gr = row0 + ar, gk = k0 + ak;
      as[ar][ak] = (gr < m && gk < k_end) ? a(gr, gk) : 0.0f;
      const int bk = e / kTcTile, bc = e % kTcTile;  // consecutive threads: consecutive columns
      const int64_t gk2 = k0 + bk, gc = col0 + bc;
      bs[bk][bc] = (gk2 < k_end && gc < n) ? b(gk2, gc) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTcK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], &as[wm * 32 + i * 16][kk], kTcLdA);
        for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::load_matrix_sync(fb[j], &bs[kk][wn * 32 + j * 16], kTcLdB);
        for (int t = 0; t < fb[j].num_elements; ++t) fb[j].x[t] = wmma::__float_to_tf32(fb[j].x[t]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // the tiles are consumed before the next stage overwrites them
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kTcLdB,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kTcTile * kTcTile; e += kTcThreads) {
    const int r = e / kTcTile, col = e % kTcTile;  // consecutive threads: consecutive columns
    const int64_t gr = row0 + r, gc = col0 + col;
    if (gr >= m || gc >= n) continue;
    const float v = cs[r][col];
    if (gridDim.z > 1 || !accumulate) {
      c[gr * n + gc] = v + (bias ? bias[gc] : 0.0f);
    } else {
      c[gr * n + gc] += v;
    }
  }
#endif
}

}  // namespace ddpm::cuda
