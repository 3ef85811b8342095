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
//   block    a 128 x 128 tile of c, 256 threads = 2 warpgroups, warpgroup w owning rows
//            64 w..64 w + 63: one wgmma.m64n128k16 per 16 of k, 64 fp32 accumulators a
//            thread (128 x 128 x 4 bytes over 256 threads).
//   stage    a 128 x 64 tile of a and one of b (64 of k: one 128-byte swizzled row each,
//            16 KB a tile), in ptx::Sw128KMajor's layout: 4 wgmma per stage, the descriptors'
//            start advanced 32 bytes per 16 of k. 4 stages = 128 KB of shared memory (an
//            H100 block may have 227 KB), plus 1 KB to align the first tile to the
//            swizzle's 1024-byte atom.
//   loads    cp.async, 16 bytes a copy: 128 rows x 8 chunks per tile over 256 threads is
//            4 chunks of a and 4 of b per thread and stage; a warp copies 4 whole rows of
//            128 bytes (coalesced), rows past m or n and k past the end zero-filled. Stored
//            at their swizzled place, so the wgmma reads them as they are.
//   pipeline (S = 4) each iteration issues one tile's 4 wgmma as a group and leaves it in
//            flight (wgmma.wait_group 1 then waits for the group before it), so the tensor
//            cores work on tile t while the warps pass the next barrier and issue the next
//            loads. A stage is therefore free two iterations after its products were issued:
//            tiles 0..S-3 are requested before the loop, and iteration t waits for tile t
//            (cp.async.wait_group S-3), makes the copies visible to the async proxy
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

namespace ddpm::cuda {

namespace {

constexpr int kTile = 128;       // rows of c (m) and columns (n) per block
constexpr int kTileK = 64;       // k per stage: one 128-byte swizzled row
constexpr int kStages = 4;       // 2 tiles of loads and 1 of products in flight: 128 KB
constexpr int kGemmThreads = 256;  // 2 warpgroups
constexpr int kTileBytes = kTile * ptx::Sw128KMajor::kRowBytes;    // 16 KB
static_assert(kTileK * 2 == ptx::Sw128KMajor::kRowBytes, "a stage's k is one swizzled row");
constexpr int kStageBytes = 2 * kTileBytes;                        // a's tile, then b's
constexpr size_t kSharedBytes = kStages * kStageBytes + ptx::Sw128KMajor::kAtomBytes;

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

// grid (ceil(n / 128), ceil(m / 128)), 256 threads, kSharedBytes of dynamic shared memory.
__global__ void __launch_bounds__(kGemmThreads, 1)
gemm_bf16_sm90_kernel(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                      float* c) {
#if DDPM_HAS_SM90A_WGMMA
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  // the first stage at the next multiple of 1024 in the shared window (the swizzle's atom)
  const ptx::SharedAddress raw = ptx::shared_address(smem);
  const ptx::SharedAddress tiles =
      (raw + ptx::Sw128KMajor::kAtomBytes - 1) / ptx::Sw128KMajor::kAtomBytes *
      ptx::Sw128KMajor::kAtomBytes;
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
    const ptx::SharedAddress stage = tiles + (t % kStages) * kStageBytes;
    // this warpgroup's 64 rows of a: 8 atoms on from the tile's start
    const ptx::SharedAddress a_rows = stage + warpgroup * 64 * ptx::Sw128KMajor::kRowBytes;
    ptx::wgmma_fence_operands(d);
    ptx::wgmma_fence();
    for (int s = 0; s < kTileK / 16; ++s)
      ptx::wgmma_m64n128k16_bf16(d, ptx::sw128_descriptor(a_rows + 32 * s),
                                 ptx::sw128_descriptor(stage + kTileBytes + 32 * s),
                                 t > 0 || s > 0);
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<1>();  // tile t-1's products: its stage is reloaded next iteration
    ptx::wgmma_fence_operands(d);
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operands(d);

  // d[4j + i] = c[64 warpgroup + 16 w + g + 8 (i / 2)][8 j + 2 t + i % 2]
  const int lane = static_cast<int>(threadIdx.x) % 32, w = static_cast<int>(threadIdx.x) / 32 % 4;
  const int g = lane / 4, tq = lane % 4;
  for (int half = 0; half < 2; ++half) {
    const int64_t row = m0 + 64 * warpgroup + 16 * w + g + 8 * half;
    if (row >= m) continue;
    float* out = c + row * n;
    for (int j = 0; j < 16; ++j) {
      const int64_t col = n0 + 8 * j + 2 * tq;
      if (col < n) out[col] = d[4 * j + 2 * half];
      if (col + 1 < n) out[col + 1] = d[4 * j + 2 * half + 1];
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
  reserve_shared_memory(gemm_bf16_sm90_kernel, kSharedBytes, "gemm_bf16_sm90",
                        "no Hopper GPU has less");
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  DDPM_LAUNCH(gemm_bf16_sm90_kernel, grid, kGemmThreads, kSharedBytes)(m, n, k, a, b, c);
}

}  // namespace ddpm::cuda
