// A bf16 GEMM on Hopper's wgmma (kernels/cuda/ptx_sm90.cuh has the instructions and the
// tile layouts): c (m x n, fp32) = A (m x k) B^T, A and B bf16, each K-major or MN-major.
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
//   loads    cp.async, 16 bytes a copy: a tile is 1024 chunks, 4 of a and 4 of b per thread
//            and stage. K-major: 128 rows of 8 chunks of k, a warp copying 4 whole rows of
//            128 bytes; MN-major: 64 rows of k of 16 chunks of m (n), a warp copying 2 rows
//            of 256 bytes (both coalesced); rows past m or n and k past the end zero-filled.
//            Stored at their swizzled place (wgmma_tile.cuh's TileLayout), so the wgmma reads
//            them as they are, the MN-major ones with its trans bit set.
//   pipeline (S = 4) tiles 0..S-3 are requested before the loop; iteration t waits for tile
//            t (cp.async.wait_group S-3), makes the copies visible to the async proxy
//            (fence.proxy.async) and to every thread (__syncthreads, which also proves both
//            warpgroups waited for tile t-2's products), requests tile t+S-2 into tile
//            t-2's stage, then issues tile t's products and waits for tile t-1's. S-2 tiles
//            of loads and one of products stay in flight; the loop ends waiting for all.
//   epilogue the accumulators' fragments (ptx_sm90.cuh) stored as they are: pairs of
//            adjacent columns per row.
// Deterministic: every product sums its k in one fixed order.
//
// Three ways to load the tiles, side by side (GemmLoads), the same tile and products:
//   cp.async  every thread computes the addresses of its 8 chunks a stage and copies them
//            (above): about half of what a warp issues per stage is that (static SASS,
//            sm_90a: 219-240 instructions in the loop, 118-136 with TMA), and the copies'
//            completion is each thread's own, so a barrier after the waits makes a stage
//            whole.
//   TMA      one thread asks the copy engine for each operand's tile (ptx_sm90.cuh: one box
//            of 128 rows x 64 k for a K-major tile, two of 64 k x 64 rows, its panels, for an
//            MN-major one), which writes it already in the 128-byte swizzle and zero-fills
//            what lies past m, n or k; no other thread issues anything for the loads. Each
//            stage has an mbarrier that counts the stage's 32 KB in: tile t has landed once
//            its stage's barrier completes its phase t / kStages (parity (t / kStages) % 2).
//            The loop is otherwise the cp.async one: wait for tile t, __syncthreads (both
//            warpgroups are past tile t-2's products), thread 0 requests tile t+S-2 into
//            tile t-2's stage, then the products. This is CUTLASS's plain TMA schedule.
//   TMA, warp-specialised (GemmLoads::TmaWarpSpecialized)  CUTLASS's other schedule: a third
//            warpgroup, the producer, whose thread 0 loops over the tiles requesting each
//            into its stage once the consumers have released it; the two consumer
//            warpgroups (the 256 threads above) wait for a tile's bytes, multiply, and
//            release the tile before it (its products are done once multiply_stage returns)
//            by arriving on the stage's second barrier, 256 arrivals a phase. No block
//            barrier in the loop: the plain schedule's __syncthreads makes both warpgroups
//            wait for the slower one every stage, and the requests wait for both; here a
//            stage is refilled as soon as both are done with it, so up to kStages - 1 tiles
//            of loads are in flight instead of kStages - 2. The producer's registers are
//            not given back (CUTLASS's setmaxnreg): at 384 threads a block may still have
//            170 a thread, more than the consumers' 90 need. Static SASS (sm_90a): the
//            consumers' loop is 94 instructions a warp.
//   TMA, two blocks an SM (GemmLoads::TmaPaired)  the plain TMA schedule in a ring of 3
//            stages (96 KB), so that two blocks fit an SM: one block's first loads and its
//            epilogue (64 KB of c) overlap the other's products, where a lone block leaves
//            the tensor cores idle through both. Each keeps one tile of loads in flight
//            instead of two, the SM two as before. Convolution v5 has the same ring
//            (conv2d_bf16.cu, docs/kernels.md says why there); here it is timed on the
//            plainest GEMM.
#include <cuda_runtime.h>

#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/tensor_map.cuh"
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

// Copies the 128 x 64 tile at (row0, k0) of an operand with `rows` rows (m or n) into a
// stage's tile: src is rows x k (K-major) or k x rows (MN-major), row-major. Chunk
// q = tid + 256 j is (row q / 8, k 8 (q % 8)) or (k q / 16, row 8 (q % 16)).
template <Major kMajor>
__device__ void load_tile(ptx::SharedAddress dst, const uint16_t* src, int64_t rows,
                          int64_t row0, int64_t k, int64_t k0) {
  for (int j = 0; j < kChunksPerThread; ++j) {
    const int q = static_cast<int>(threadIdx.x) + kGemmThreads * j;
    const int row = kMajor == Major::K ? q / 8 : 8 * (q % 16);
    const int kk = kMajor == Major::K ? 8 * (q % 8) : q / 16;
    const int64_t r = row0 + row, kr = k0 + kk;
    const bool valid = r < rows && kr < k;
    const int64_t at = kMajor == Major::K ? r * k + kr : kr * rows + r;
    ptx::cp_async_16(dst + sm90::TileLayout<kMajor>::offset(row, kk), valid ? src + at : src,
                     valid);
  }
}

// By one thread: the copy engine asked for tile t of both operands (the block's rows m0..
// of a, n0.. of b) into its stage, counted on landed.of(t): every byte of both boxes, the
// zero-filled ones too.
template <Major kA, Major kB, int kRing>
__device__ void request_tiles(ptx::SharedAddress tiles, const sm90::StageBarriers<kRing>& landed,
                              const CUtensorMap* a_map, const CUtensorMap* b_map, int m0, int n0,
                              int t) {
  const ptx::SharedAddress stage = tiles + (t % kRing) * kStageBytes, bar = landed.of(t);
  ptx::mbarrier_arrive_expect_tx(bar, kStageBytes);
  sm90::tma_tile<kA>(stage, a_map, m0, t * kTileK, bar);
  sm90::tma_tile<kB>(stage + kTileBytes, b_map, n0, t * kTileK, bar);
}

// The block's tile of c from the accumulators of compute thread `tid` (0..255): pairs of
// adjacent columns of a row.
__device__ void store_tile(const float (&d)[64], int tid, float* c, int64_t m, int64_t n,
                           int64_t m0, int64_t n0) {
  const sm90::Fragment f(tid);
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // unrolled: d's index must be a constant, or d is in memory
    const int64_t row = m0 + f.row(h);
    if (row >= m) continue;
    float* out = c + row * n;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int64_t col = n0 + f.col(j);
      if (col < n) out[col] = d[4 * j + 2 * h];
      if (col + 1 < n) out[col + 1] = d[4 * j + 2 * h + 1];
    }
  }
}
#endif

// grid (ceil(n / 128), ceil(m / 128)), 256 threads, sm90::kSharedBytes of dynamic shared memory.
template <Major kA, Major kB>
__global__ void __launch_bounds__(kGemmThreads, 1)
gemm_bf16_sm90_kernel(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                      float* c) {
#if DDPM_HAS_SM90A_WGMMA
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress tiles = sm90::first_stage(smem);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int k_tiles = static_cast<int>((k + kTileK - 1) / kTileK);
  const int warpgroup = sm90::uniform_warpgroup(static_cast<int>(threadIdx.x));

  auto request = [&](int tile) {
    if (tile < k_tiles) {
      const ptx::SharedAddress stage = tiles + (tile % kStages) * kStageBytes;
      load_tile<kA>(stage, a, m, m0, k, static_cast<int64_t>(tile) * kTileK);
      load_tile<kB>(stage + kTileBytes, b, n, n0, k, static_cast<int64_t>(tile) * kTileK);
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
    sm90::multiply_stage<kA, kB>(d, tiles + (t % kStages) * kStageBytes, warpgroup, t > 0);
  }
  sm90::finish(d);
  store_tile(d, static_cast<int>(threadIdx.x), c, m, n, m0, n0);
#endif
}

// The same with the copy engine's loads: a_map and b_map box the operands' tiles (host side:
// launch_tma below), sm90::StageBarriers after the stages. Coordinates are 32-bit: m, n,
// k < 2^31 (tensor maps hold sizes to 2^32). A ring of kRing stages: kStages, or
// kPairedStages for two blocks an SM (GemmLoads::TmaPaired).
template <Major kA, Major kB, int kRing>
__global__ void __launch_bounds__(kGemmThreads, sm90::blocks_an_sm(kRing))
gemm_bf16_sm90_tma_kernel(int64_t m, int64_t n, int64_t k,
                          const __grid_constant__ CUtensorMap a_map,
                          const __grid_constant__ CUtensorMap b_map, float* c) {
#if DDPM_HAS_SM90A_WGMMA
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress tiles = sm90::first_stage(smem);
  const sm90::StageBarriers<kRing> landed(tiles);
  const int m0 = static_cast<int>(blockIdx.y) * kTile, n0 = static_cast<int>(blockIdx.x) * kTile;
  const int k_tiles = static_cast<int>((k + kTileK - 1) / kTileK);
  const int warpgroup = sm90::uniform_warpgroup(static_cast<int>(threadIdx.x));
  const bool loader = threadIdx.x == 0;

  if (loader) landed.init();
  __syncthreads();
  auto request = [&](int tile) {  // by the loader thread only
    if (tile < k_tiles) request_tiles<kA, kB>(tiles, landed, &a_map, &b_map, m0, n0, tile);
  };
  if (loader)
    for (int t = 0; t < kRing - 2; ++t) request(t);

  float d[64];
  for (float& v : d) v = 0.0f;
  for (int t = 0; t < k_tiles; ++t) {
    landed.wait(t);   // tile t has landed
    __syncthreads();  // both warpgroups are past tile t-2's products: its stage is free
    if (loader) request(t + kRing - 2);
    sm90::multiply_stage<kA, kB>(d, tiles + (t % kRing) * kStageBytes, warpgroup, t > 0);
  }
  sm90::finish(d);
  store_tile(d, static_cast<int>(threadIdx.x), c, m, n, m0, n0);
#endif
}

// The warp-specialised schedule: a producer warpgroup whose thread 0 only requests tiles,
// and the two consumer warpgroups of the kernels above, which only multiply; they hand the
// stages over through two barriers a stage (StageBarriers: landed, counted in bytes by the
// copy engine; released, one arrival per consumer thread). No block barrier in the loop: a
// consumer waits for its tile's bytes, the producer for the stage's release, each as late
// as it can. grid as above, kWsThreads threads, shared_bytes_with_barriers(2).
constexpr int kWsThreads = kGemmThreads + 128;  // the producer warpgroup first

template <Major kA, Major kB>
__global__ void __launch_bounds__(kWsThreads, 1)
gemm_bf16_sm90_ws_kernel(int64_t m, int64_t n, int64_t k,
                         const __grid_constant__ CUtensorMap a_map,
                         const __grid_constant__ CUtensorMap b_map, float* c) {
#if DDPM_HAS_SM90A_WGMMA
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress tiles = sm90::first_stage(smem);
  const sm90::StageBarriers<kStages> landed(tiles, 0), released(tiles, 1);
  const int m0 = static_cast<int>(blockIdx.y) * kTile, n0 = static_cast<int>(blockIdx.x) * kTile;
  const int k_tiles = static_cast<int>((k + kTileK - 1) / kTileK);

  if (threadIdx.x == 0) {
    landed.init(1);               // the producer's arrive.expect_tx, then the bytes
    released.init(kGemmThreads);  // every consumer thread
  }
  __syncthreads();  // the only block barrier: the barriers are initialised
  if (threadIdx.x < 128) {  // the producer warpgroup: thread 0 requests, the rest are idle
    if (threadIdx.x != 0) return;
    for (int t = 0; t < k_tiles; ++t) {
      released.wait_released(t);  // tile t - kStages's products are done (t < kStages: none)
      request_tiles<kA, kB>(tiles, landed, &a_map, &b_map, m0, n0, t);
    }
    return;
  }
  const int tid = static_cast<int>(threadIdx.x) - 128;  // 0..255, as in the kernels above
  const int warpgroup = sm90::uniform_warpgroup(tid);
  float d[64];
  for (float& v : d) v = 0.0f;
  for (int t = 0; t < k_tiles; ++t) {
    landed.wait(t);
    sm90::multiply_stage<kA, kB>(d, tiles + (t % kStages) * kStageBytes, warpgroup, t > 0);
    if (t > 0) ptx::mbarrier_arrive(released.of(t - 1));  // tile t-1's products are done
  }
  sm90::finish(d);
  store_tile(d, tid, c, m, n, m0, n0);
#endif
}

__global__ void sm90a_probe_kernel(int* has_wgmma) { *has_wgmma = DDPM_HAS_SM90A_WGMMA; }

template <Major kA, Major kB>
void launch(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b, float* c) {
  reserve_shared_memory(gemm_bf16_sm90_kernel<kA, kB>, sm90::kSharedBytes, "gemm_bf16_sm90",
                        "no Hopper GPU has less");
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  DDPM_LAUNCH((gemm_bf16_sm90_kernel<kA, kB>), grid, kGemmThreads, sm90::kSharedBytes)(
      m, n, k, a, b, c);
}

// An operand's tensor map: K-major, the rows x k matrix boxed 128 rows at a time; MN-major,
// the k x rows matrix boxed 64 rows of k at a time (a panel).
CUtensorMap operand_map(const uint16_t* x, Major major, int64_t rows, int64_t k,
                        const char* what) {
  return major == Major::K ? bf16_tensor_map_sw128(x, rows, k, kTile, what)
                           : bf16_tensor_map_sw128(x, k, rows, kTileK, what);
}

// The plain TMA kernel in a ring of kRing stages (GemmLoads::Tma: 4; TmaPaired: 3).
template <Major kA, Major kB, int kRing>
void launch_plain_tma(dim3 grid, int64_t m, int64_t n, int64_t k, const CUtensorMap& a_map,
                      const CUtensorMap& b_map, float* c) {
  constexpr size_t kBytes = sm90::shared_bytes_with_barriers(1, kRing);
  reserve_shared_memory(gemm_bf16_sm90_tma_kernel<kA, kB, kRing>, kBytes,
                        "gemm_bf16_sm90 (TMA loads)", "no Hopper GPU has less",
                        sm90::blocks_an_sm(kRing));
  DDPM_LAUNCH((gemm_bf16_sm90_tma_kernel<kA, kB, kRing>), grid, kGemmThreads, kBytes)(
      m, n, k, a_map, b_map, c);
}

// The TMA kernels, plain (GemmLoads::Tma, TmaPaired) or warp-specialised.
template <Major kA, Major kB>
void launch_tma(GemmLoads loads, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                const uint16_t* b, float* c) {
  CHECK(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31),
        "gemm_bf16_sm90 (TMA loads): sizes under 2^31 (32-bit box coordinates); this one is "
            << m << " x " << n << " x " << k);
  const CUtensorMap a_map = operand_map(a, kA, m, k, "gemm_bf16_sm90 (TMA loads), a");
  const CUtensorMap b_map = operand_map(b, kB, n, k, "gemm_bf16_sm90 (TMA loads), b");
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  if (loads == GemmLoads::Tma) {
    launch_plain_tma<kA, kB, kStages>(grid, m, n, k, a_map, b_map, c);
  } else if (loads == GemmLoads::TmaPaired) {
    launch_plain_tma<kA, kB, sm90::kPairedStages>(grid, m, n, k, a_map, b_map, c);
  } else {
    constexpr size_t kBytes = sm90::shared_bytes_with_barriers(2);
    reserve_shared_memory(gemm_bf16_sm90_ws_kernel<kA, kB>, kBytes,
                          "gemm_bf16_sm90 (TMA loads, warp-specialised)", "no Hopper GPU has less");
    DDPM_LAUNCH((gemm_bf16_sm90_ws_kernel<kA, kB>), grid, kWsThreads, kBytes)(m, n, k, a_map,
                                                                              b_map, c);
  }
}

template <Major kA, Major kB>
void launch_with(GemmLoads loads, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                 const uint16_t* b, float* c) {
  // k = 0: c is zeros, which the cp.async kernel writes (a tensor map has no empty dimension)
  if (loads != GemmLoads::CpAsync && k > 0)
    launch_tma<kA, kB>(loads, m, n, k, a, b, c);
  else
    launch<kA, kB>(m, n, k, a, b, c);
}

const char* major_name(Major major) { return major == Major::K ? "K-major" : "MN-major"; }

// What a K-major operand needs of k, an MN-major one of its rows: whole 16-byte chunks.
void check_chunks(const char* operand, Major major, const char* rows_name, int64_t rows,
                  int64_t k) {
  const bool k_major = major == Major::K;
  CHECK((k_major ? k : rows) % 8 == 0,
        "gemm_bf16_sm90: " << operand << " is " << major_name(major) << ", so "
                           << (k_major ? "k" : rows_name) << " (" << (k_major ? k : rows)
                           << ") must be a multiple of 8");
}

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

std::string sm90a_missing() {
  return "needs a GPU of compute capability 9.0 (H100, H200) and a build with sm_90a code "
         "(CMAKE_CUDA_ARCHITECTURES with 90); this device is sm_" +
         std::to_string(compute_capability());
}

int gemm_sm90_blocks_an_sm(GemmLoads loads) {
  CHECK(loads == GemmLoads::Tma || loads == GemmLoads::TmaPaired,
        "gemm_sm90_blocks_an_sm: Tma or TmaPaired (the plain TMA schedule's rings of 4 and 3)");
  auto blocks = [](auto ring) {
    constexpr int kRing = decltype(ring)::value;
    return resident_blocks(gemm_bf16_sm90_tma_kernel<Major::K, Major::K, kRing>, kGemmThreads,
                           sm90::shared_bytes_with_barriers(1, kRing), sm90::blocks_an_sm(kRing),
                           "gemm_bf16_sm90 (TMA loads)");
  };
  return loads == GemmLoads::TmaPaired ? blocks(std::integral_constant<int, sm90::kPairedStages>{})
                                       : blocks(std::integral_constant<int, kStages>{});
}

void gemm_bf16_sm90(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                    float* c, Major a_major, Major b_major, GemmLoads loads) {
  CHECK(gemm_sm90_available(), "gemm_bf16_sm90 " << sm90a_missing());
  CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_bf16_sm90: negative size " << m << " x " << n << " x "
                                                                      << k);
  check_chunks("a", a_major, "m", m, k);
  check_chunks("b", b_major, "n", n, k);
  CHECK(reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0,
        "gemm_bf16_sm90: a and b must be 16-byte aligned (whole 16-byte chunks)");
  if (m == 0 || n == 0) return;
  if (a_major == Major::K)
    b_major == Major::K ? launch_with<Major::K, Major::K>(loads, m, n, k, a, b, c)
                        : launch_with<Major::K, Major::MN>(loads, m, n, k, a, b, c);
  else
    b_major == Major::K ? launch_with<Major::MN, Major::K>(loads, m, n, k, a, b, c)
                        : launch_with<Major::MN, Major::MN>(loads, m, n, k, a, b, c);
}

}  // namespace ddpm::cuda
