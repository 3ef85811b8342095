// The 128 x 128 block tile on Hopper's wgmma that the GEMM (gemm_sm90.cu) and convolution
// v5 (conv2d_bf16_v5.cu) share: its shared-memory stages, one stage's products, and where each
// accumulator lands in the tile. The instructions and the tile layout are ptx_sm90.cuh's.
//
//   block    256 threads = 2 warpgroups; warpgroup w owns rows 64 w..64 w + 63 of the tile,
//            one wgmma.m64n128k16 per 16 of k, 64 fp32 accumulators a thread.
//   tall     (convolution v5's Bf16Tiles::WgmmaTall) kSub = 2 sub-tiles of 64 rows a
//            warpgroup: a 256 x 128 tile, warpgroup w owning rows 128 w..128 w + 127, two
//            wgmma.m64n128k16 per 16 of k (one per sub-tile, the same B), 128 accumulators
//            a thread. A's tile is 32 KB, B's 16 KB as before: each B tile brought from L2
//            feeds twice the rows (CUTLASS's "cooperative" 256 x 128 tile). Every size
//            below takes kSub; 1 is the 128 x 128 tile.
//   stage    a 128 x 64 tile of A then one of B, 16 KB each, in the 128-byte swizzle
//            (TileLayout: K-major, a 128-byte row of 64 k per m or n; or MN-major, two
//            panels of 64 m or n, a 128-byte row of them per k); kStages = 4 stages, 128 KB,
//            after the dynamic shared memory's start rounded up to the swizzle's 1024-byte
//            atom (1 KB more is asked for). Or a ring of kPairedStages = 3 (96 KB), so that
//            two blocks share an SM (blocks_an_sm): one block's prologue and epilogue then
//            overlap the other's products, where a lone block leaves the tensor cores idle
//            through both (on a 3x3 convolution of 128 channels, 18 stages a block).
//   products multiply_stage issues a stage's 4 wgmma as one group and leaves it in flight,
//            waiting only for the group before it: the tensor cores work on stage t while
//            the warps pass the next barrier and issue the next loads, and stage t-1 is free
//            once it returns (for every warpgroup after the next __syncthreads). So a
//            pipeline reloads a stage two iterations after its products were issued, keeping
//            kStages - 2 tiles of loads ahead; finish() waits for the last group.
//   TMA      with the copy engine's loads, StageBarriers (an mbarrier per stage; a second set
//            for the warp-specialised GEMM's releases) and tma_tile (an operand's tile in
//            one box, K-major, or two panels, MN-major).
// Needs DDPM_HAS_SM90A_WGMMA (ptx_sm90.cuh); callers compile it only there.
#pragma once

#include <cstddef>

#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/ptx_sm90.cuh"

namespace ddpm::cuda::sm90 {

constexpr int kTile = 128;        // rows (m) and columns (n) of the block's tile
constexpr int kTileK = 64;        // k per stage: one 128-byte swizzled row
constexpr int kStages = 4;        // 2 tiles of loads and 1 of products in flight
constexpr int kPairedStages = 3;  // 1 tile of loads and 1 of products, two blocks an SM
// The tall tile's ring (conv v5's WgmmaTall, 48 KB a stage): 1 tile of loads in flight, as a
// paired block's, but behind a stage of twice the products (2048 cycles of an SM's tensor
// cores at their peak, ~1.1 us, against an L2 latency under 1 us); 3 stages (146 KB) leave
// 92 KB of L1 for the gathers where 4 (194 KB) would leave 60.
constexpr int kTallStages = 3;
constexpr int kThreads = 256;     // 2 warpgroups
constexpr int kTileBytes = kTile * ptx::Sw128::kRowBytes;  // 16 KB
constexpr int kStageBytes = 2 * kTileBytes;               // A's tile, then B's
static_assert(kTileK * 2 == ptx::Sw128::kRowBytes, "a stage's k is one swizzled row");
// With kSub sub-tiles of 64 rows a warpgroup: A's tile has 128 kSub rows (kSub tiles of
// 16 KB), B's follows it.
__host__ __device__ constexpr int tile_rows(int sub) { return kTile * sub; }
__host__ __device__ constexpr int a_tile_bytes(int sub) { return sub * kTileBytes; }
__host__ __device__ constexpr int stage_bytes(int sub) { return a_tile_bytes(sub) + kTileBytes; }
static_assert(stage_bytes(1) == kStageBytes, "the 128 x 128 tile is kSub = 1");

// A ring of `stages` stages: its shared memory, and how many blocks an SM holds. An H100's
// SM has 228 KB of shared memory (a block at most 227 KB, and 1 KB more is the system's)
// and 64 K registers: two blocks of 3 stages take 2 x 98 KB and, at 128 registers a thread
// (their __launch_bounds__), all the registers; two of 4 stages (2 x 130 KB) do not fit,
// nor two tall tiles (kSub = 2) of 3 stages (2 x 146 KB).
constexpr size_t shared_bytes(int stages, int sub = 1) {
  return stages * stage_bytes(sub) + ptx::Sw128::kAtomBytes;
}
constexpr int blocks_an_sm(int stages, int sub = 1) {
  return 2 * (shared_bytes(stages, sub) + 1024) <= 228 * 1024 ? 2 : 1;
}
constexpr size_t kSharedBytes = shared_bytes(kStages);
static_assert(blocks_an_sm(kStages) == 1 && blocks_an_sm(kPairedStages) == 2,
              "the paired ring is the one whose two blocks fit an SM");

// Where an operand's 128 x 64 tile keeps its elements (ptx_sm90.cuh: the two layouts).
// offset(mn, k): bytes from the tile to the 16-byte chunk that starts at (mn, k), which
// holds k..k+7 (K-major: k a multiple of 8) or mn..mn+7 (MN-major: mn a multiple of 8).
// descriptor(tile, mn0, step): the operand of one wgmma, rows mn0.. of the tile (A: the
// warpgroup's 64; B: all 128) at k = 16 step.
template <Major kMajor>
struct TileLayout;

template <>
struct TileLayout<Major::K> {  // row mn: 64 k, 128 bytes
  __host__ __device__ static constexpr int offset(int mn, int k) {
    return ptx::Sw128::offset(mn, k / 8);
  }
#if DDPM_HAS_SM90A_WGMMA
  __device__ static uint64_t descriptor(ptx::SharedAddress tile, int mn0, int step) {
    constexpr uint32_t kUnused = 16;  // the leading byte offset (ptx_sm90.cuh): encoded 1
    return ptx::sw128_descriptor(tile + mn0 * ptx::Sw128::kRowBytes + 32 * step, kUnused,
                                 ptx::Sw128::kAtomBytes);
  }
#endif
};

template <>
struct TileLayout<Major::MN> {  // panel p: row k holds mn 64 p..64 p + 63
  static constexpr int kPanel = 64;                                   // m or n per panel
  static constexpr int kPanelBytes = kTileK * ptx::Sw128::kRowBytes;  // 64 rows of k: 8 KB
  __host__ __device__ static constexpr int offset(int mn, int k) {
    return mn / kPanel * kPanelBytes + ptx::Sw128::offset(k, mn % kPanel / 8);
  }
#if DDPM_HAS_SM90A_WGMMA
  __device__ static uint64_t descriptor(ptx::SharedAddress tile, int mn0, int step) {
    constexpr int kStepBytes = 2 * ptx::Sw128::kAtomBytes;  // 16 rows of k
    return ptx::sw128_descriptor(tile + mn0 / kPanel * kPanelBytes + kStepBytes * step,
                                 kPanelBytes, ptx::Sw128::kAtomBytes);
  }
#endif
};

// With the copy engine's loads (TMA): a set of mbarriers, one per stage of a ring of kRing,
// after the stages (8 bytes each: shared_bytes_with_barriers(sets, kRing) in all). Set 0,
// `landed`: tile t lands in stage t % kRing, counted on that stage's barrier, whose phase
// t / kRing completes when it has (wait: parity (t / kRing) % 2, a barrier's phases
// alternating). Set 1, `released` (the warp-specialised GEMM): the consumers arrive on a
// stage's barrier when they are done with its tile, so the phase t / kRing - 1 of tile t's
// barrier is the release of the tile before it in that stage (wait_released: parity
// (t / kRing + 1) % 2, which a barrier still in its first phase passes at once: the first
// kRing tiles wait for nothing).
constexpr size_t shared_bytes_with_barriers(int sets, int stages = kStages, int sub = 1) {
  return shared_bytes(stages, sub) + sets * stages * sizeof(uint64_t);
}
template <int kRing = kStages, int kSub = 1>
struct StageBarriers {
  ptx::SharedAddress first;  // stage s's barrier: first + 8 s
  __device__ explicit StageBarriers(ptx::SharedAddress first_stage_, int set = 0)
      : first(first_stage_ + kRing * stage_bytes(kSub) + set * kRing * 8) {}
  // By one thread, before a __syncthreads: `arrivals` a phase (landed: the requesting
  // thread's one; released: every consumer thread's).
  __device__ void init(unsigned arrivals = 1) const {
    for (int s = 0; s < kRing; ++s) ptx::mbarrier_init(first + 8 * s, arrivals);
    ptx::fence_mbarrier_init();  // ... seen by the copy engine, then (the barrier) by all
  }
  __device__ ptx::SharedAddress of(int tile) const { return first + 8 * (tile % kRing); }
  __device__ void wait(int tile) const { ptx::mbarrier_wait(of(tile), (tile / kRing) % 2); }
  __device__ void wait_released(int tile) const {
    ptx::mbarrier_wait(of(tile), (tile / kRing + 1) % 2);
  }
};

// An operand's 128 x 64 tile at (mn0, k0) by the copy engine, onto the barrier `landed`:
// K-major, one box of 128 rows (mn) of 64 k (map: rows x k); MN-major, its two panels, each
// a box of 64 rows of k holding 64 of mn (map: k x rows).
template <Major kMajor>
__device__ void tma_tile(ptx::SharedAddress dst, const CUtensorMap* map, int mn0, int k0,
                         ptx::SharedAddress landed) {
  if constexpr (kMajor == Major::K) {
    ptx::tma_load_2d(dst, map, k0, mn0, landed);
  } else {
    using Panels = TileLayout<Major::MN>;
    for (int p = 0; p < kTile / Panels::kPanel; ++p)
      ptx::tma_load_2d(dst + p * Panels::kPanelBytes, map, mn0 + p * Panels::kPanel, k0, landed);
  }
}

#if DDPM_HAS_SM90A_WGMMA

// The warpgroup thread `tid` is in (tid / 128), as a value the compiler knows to be the same
// in every lane of the warp: a shuffle from lane 0. What is computed from it, A's
// descriptors, then stays in the uniform registers wgmma reads them from; from tid / 128 they
// were built in each thread's registers and moved over (R2UR) for every instruction.
// (CUTLASS's canonical_warp_group_idx does the same.)
__device__ __forceinline__ int uniform_warpgroup(int tid) {
  return __shfl_sync(0xffffffffu, tid / 128, 0);
}

// Stage s's A tile, at first_stage(...) + s kStageBytes (its B tile kTileBytes on).
__device__ __forceinline__ ptx::SharedAddress first_stage(const void* dynamic_shared) {
  constexpr int kAtom = ptx::Sw128::kAtomBytes;
  return (ptx::shared_address(dynamic_shared) + kAtom - 1) / kAtom * kAtom;
}

// d[i] (+)= sub-tile i of this warpgroup's rows of the stage's A (rows 64 (kSub warpgroup
// + i)..+63) times its B, A laid out kA and B kB: 4 kSub wgmma, one group, left in flight;
// returns once the group before it is done. `accumulate` false: the first stage.
template <Major kA, Major kB, int kSub>
__device__ __forceinline__ void multiply_stage(float (&d)[kSub][64], ptx::SharedAddress stage,
                                               int warpgroup, bool accumulate) {
#pragma unroll
  for (int i = 0; i < kSub; ++i) ptx::wgmma_fence_operands(d[i]);
  ptx::wgmma_fence();
#pragma unroll
  for (int s = 0; s < kTileK / 16; ++s)
#pragma unroll
    for (int i = 0; i < kSub; ++i)
      ptx::wgmma_m64n128k16_bf16<kA, kB>(
          d[i], TileLayout<kA>::descriptor(stage, 64 * (kSub * warpgroup + i), s),
          TileLayout<kB>::descriptor(stage + a_tile_bytes(kSub), 0, s), accumulate || s > 0);
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<1>();
#pragma unroll
  for (int i = 0; i < kSub; ++i) ptx::wgmma_fence_operands(d[i]);
}
// The 128 x 128 tile's (the GEMM's): one sub-tile.
template <Major kA, Major kB>
__device__ __forceinline__ void multiply_stage(float (&d)[64], ptx::SharedAddress stage,
                                               int warpgroup, bool accumulate) {
  multiply_stage<kA, kB, 1>(reinterpret_cast<float(&)[1][64]>(d), stage, warpgroup,
                            accumulate);
}

template <int kSub>
__device__ __forceinline__ void finish(float (&d)[kSub][64]) {
  ptx::wgmma_wait_group<0>();
#pragma unroll
  for (int i = 0; i < kSub; ++i) ptx::wgmma_fence_operands(d[i]);
}
__device__ __forceinline__ void finish(float (&d)[64]) {
  finish(reinterpret_cast<float(&)[1][64]>(d));
}

// Where a thread's accumulators are in the block's tile (ptx_sm90.cuh's fragment layout):
// d[i][4j + 2h] and d[i][4j + 2h + 1] (d[4j + 2h].. with one sub-tile) are row(h, i),
// columns col(j) and col(j) + 1. `sub`: the sub-tiles of 64 rows a warpgroup.
struct Fragment {
  int warpgroup, warp, g, t;  // warp: within the warpgroup
  int sub;
  __device__ explicit Fragment(int tid, int sub_ = 1)
      : warpgroup(tid / 128), warp(tid / 32 % 4), g(tid % 32 / 4), t(tid % 4), sub(sub_) {}
  __device__ int row(int h, int i = 0) const {
    return 64 * (sub * warpgroup + i) + 16 * warp + g + 8 * h;
  }
  __device__ int col(int j) const { return 8 * j + 2 * t; }
};

#endif  // DDPM_HAS_SM90A_WGMMA

}  // namespace ddpm::cuda::sm90
