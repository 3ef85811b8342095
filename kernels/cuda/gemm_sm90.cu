// A bf16 GEMM on Hopper's wgmma (kernels/cuda/ptx_sm90.cuh has the instructions and the
// tile layout): c (m x n, fp32) = a (m x k) b^T, a and b K-major bf16.
//
// Why: Hopper runs mma.sync (convolution v4, ptx.cuh) at a fraction of its tensor-core rate;
// its full rate comes through wgmma, where a warpgroup of 4 warps multiplies a 64 x N x 16
// product straight out of shared memory: no ldmatrix, no fragments in registers for A and
// B, one instruction where mma.sync takes N / 2 (64 at N = 128) plus their loads. This
// kernel is the smallest complete use of it, written to be checked before anything is built
// on it: the tile layout, the descriptors, the accumulator fragments and the async
// discipline are all here, on the plainest GEMM.
//
//   block    wgmma_tile.cuh's 128 x 128 tile: 2 warpgroups of 64 rows, 64 accumulators a
//            thread, 4 stages of 64 k (128 KB of shared memory; an H100 block may have
//            227 KB), one stage's products left in flight behind the next loads.
//   loads    cp.async, 16 bytes a copy: 128 rows x 8 chunks per tile over 256 threads is
//            4 chunks of a and 4 of b per thread and stage; a warp copies 4 whole rows of
//            128 bytes (coalesced), rows past m or n and k past the end zero-filled. Stored
//            at their swizzled place, so the wgmma reads them as they are.
//   pipeline (S = 4) tiles 0..S-3 are requested before the loop; iteration t waits for tile
//            t (cp.async.wait_group S-3), makes the copies visible to the async proxy
//            (fence.proxy.async) and to every thread (__syncthreads, which also proves both
//            warpgroups waited for tile t-2's products), requests tile t+S-2 into tile
//            t-2's stage, then issues tile t's products and waits for tile t-1's. S-2 tiles
//            of loads and one of products stay in flight; the loop ends waiting for all.
//   epilogue the accumulators' fragments (ptx_sm90.cuh) stored as they are: pairs of
//            adjacent columns per row.
// Deterministic: every product sums its k in one fixed order.
#include <cuda_runtime.h>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/wgmma_tile.cuh"

namespace ddpm::cuda {

namespace {

using sm90::kStageBytes;
using sm90::kStages;
using sm90::kTile;
using sm90::kTileBytes;
using sm90::kTileK;
constexpr int kGemmThreads = sm90::kThreads;

#if DDPM_HAS_SM90A_WGMMA
constexpr int kChunksPerThread = kTile * (kTileK / 8) / kGemmThreads;  // 4 of a, 4 of b

// Copies tile `tile` of k (rows row0.. of a (m x k), or of b (n x k)) into a stage's tile:
// chunk q = tid + 256 j of the 128 x 8 is row q / 8, chunk q % 8.
__device__ void load_tile(ptx::SharedAddress dst, const uint16_t* src, int64_t rows,
                          int64_t row0, int64_t k, int64_t k0) {
  for (int j = 0; j < kChunksPerThread; ++j) {
    const int q = static_cast<int>(threadIdx.x) + kGemmThreads * j, row = q / 8, chunk = q % 8;
    const int64_t r = row0 + row, kk = k0 + 8 * chunk;
    const bool valid = r < rows && kk < k;
    ptx::cp_async_16(dst + ptx::Sw128KMajor::offset(row, chunk), valid ? src + r * k + kk : src,
                     valid);
  }
}
#endif

// grid (ceil(n / 128), ceil(m / 128)), 256 threads, sm90::kSharedBytes of dynamic shared memory.
__global__ void __launch_bounds__(kGemmThreads, 1)
gemm_bf16_sm90_kernel(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                      float* c) {
#if DDPM_HAS_SM90A_WGMMA
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress tiles = sm90::first_stage(smem);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int k_tiles = static_cast<int>((k + kTileK - 1) / kTileK);
  const int warpgroup = static_cast<int>(threadIdx.x) / 128;

  auto request = [&](int tile) {
    if (tile < k_tiles) {
      const ptx::SharedAddress stage = tiles + (tile % kStages) * kStageBytes;
      load_tile(stage, a, m, m0, k, static_cast<int64_t>(tile) * kTileK);
      load_tile(stage + kTileBytes, b, n, n0, k, static_cast<int64_t>(tile) * kTileK);
    }
    ptx::cp_async_commit();  // an empty group past the end keeps the counting uniform
  };
  for (int t = 0; t < kStages - 2; ++t) request(t);

  float d[64];
  for (float& v : d) v = 0.0f;
  for (int t = 0; t < k_tiles; ++t) {
    ptx::cp_async_wait<kStages - 3>();
    ptx::fence_proxy_async_shared();
    __syncthreads();
    request(t + kStages - 2);  // into tile t-2's stage, whose products are done
    sm90::multiply_stage(d, tiles + (t % kStages) * kStageBytes, warpgroup, t > 0);
  }
  sm90::finish(d);

  const sm90::Fragment f(static_cast<int>(threadIdx.x));
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // unrolled: d's index must be a constant, or d is in memory
    const int64_t row = m0 + f.row(h);
    if (row >= m) continue;
    float* out = c + row * n;
    for (int j = 0; j < 16; ++j) {
      const int64_t col = n0 + f.col(j);
      if (col < n) out[col] = d[4 * j + 2 * h];
      if (col + 1 < n) out[col + 1] = d[4 * j + 2 * h + 1];
    }
  }
#endif
}

__global__ void sm90a_probe_kernel(int* has_wgmma) { *has_wgmma = DDPM_HAS_SM90A_WGMMA; }

}  // namespace

bool gemm_sm90_available() {
  static const bool available = [] {
    if (compute_capability() != 90) return false;
    int* flag = nullptr;
    CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    DDPM_LAUNCH(sm90a_probe_kernel, 1, 1)(flag);
    int has = 0;
    CUDA_CHECK(cudaMemcpy(&has, flag, sizeof(int), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(flag));
    return has != 0;
  }();
  return available;
}

void gemm_bf16_sm90(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                    float* c) {
  CHECK(gemm_sm90_available(),
        "gemm_bf16_sm90 needs a GPU of compute capability 9.0 (H100, H200) and a build that "
        "carries sm_90a code (CMAKE_CUDA_ARCHITECTURES with 90); this device is "
            << compute_capability() / 10 << "." << compute_capability() % 10);
  CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_bf16_sm90: negative size " << m << " x " << n << " x "
                                                                      << k);
  CHECK(k % 8 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
            reinterpret_cast<uintptr_t>(b) % 16 == 0,
        "gemm_bf16_sm90: k (" << k << ") must be a multiple of 8 and a, b 16-byte aligned");
  if (m == 0 || n == 0) return;
  reserve_shared_memory(gemm_bf16_sm90_kernel, sm90::kSharedBytes, "gemm_bf16_sm90",
                        "no Hopper GPU has less");
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  DDPM_LAUNCH(gemm_bf16_sm90_kernel, grid, kGemmThreads, sm90::kSharedBytes)(m, n, k, a, b, c);
}

}  // namespace ddpm::cuda
