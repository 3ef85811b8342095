// The 128 x 128 block tile on Hopper's wgmma that the GEMM (gemm_sm90.cu) and convolution
// v5 (conv2d_bf16_v5.cu) share: its shared-memory stages, one stage's products, and where each
// accumulator lands in the tile. The instructions and the tile layout are ptx_sm90.cuh's.
//
//   block    256 threads = 2 warpgroups; warpgroup w owns rows 64 w..64 w + 63 of the tile,
//            one wgmma.m64n128k16 per 16 of k, 64 fp32 accumulators a thread.
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
constexpr int kThreads = 256;     // 2 warpgroups
constexpr int kTileBytes = kTile * ptx::Sw128::kRowBytes;  // 16 KB
constexpr int kStageBytes = 2 * kTileBytes;               // A's tile, then B's
static_assert(kTileK * 2 == ptx::Sw128::kRowBytes, "a stage's k is one swizzled row");

// A ring of `stages` stages: its shared memory, and how many blocks an SM holds. An H100's
// SM has 228 KB of shared memory (a block at most 227 KB, and 1 KB more is the system's)
// and 64 K registers: two blocks of 3 stages take 2 x 98 KB and, at 128 registers a thread
// (their __launch_bounds__), all the registers; two of 4 stages (2 x 130 KB) do not fit.
constexpr size_t shared_bytes(int stages) {
  return stages * kStageBytes + ptx::Sw128::kAtomBytes;
}
constexpr int blocks_an_sm(int stages) {
  return 2 * (shared_bytes(stages) + 1024) <= 228 * 1024 ? 2 : 1;
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
constexpr size_t shared_bytes_with_barriers(int sets, int stages = kStages) {
  return shared_bytes(stages) + sets * stages * sizeof(uint64_t);
}
template <int kRing = kStages>
struct StageBarriers {
  ptx::SharedAddress first;  // stage s's barrier: first + 8 s
  __device__ explicit StageBarriers(ptx::SharedAddress first_stage_, int set = 0)
      : first(first_stage_ + kRing * kStageBytes + set * kRing * 8) {}
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

// Stage s's A tile, at first_stage(...) + s kStageBytes (its B tile kTileBytes on).
__device__ __forceinline__ ptx::SharedAddress first_stage(const void* dynamic_shared) {
  constexpr int kAtom = ptx::Sw128::kAtomBytes;
  return (ptx::shared_address(dynamic_shared) + kAtom - 1) / kAtom * kAtom;
}

// d (+)= this warpgroup's 64 rows of the stage's A times its B, A laid out kA and B kB:
// four wgmma, one group, left in flight; returns once the group before it is done.
// `accumulate` false: the first stage.
template <Major kA, Major kB>
__device__ __forceinline__ void multiply_stage(float (&d)[64], ptx::SharedAddress stage,
                                               int warpgroup, bool accumulate) {
  ptx::wgmma_fence_operands(d);
  ptx::wgmma_fence();
#pragma unroll
  for (int s = 0; s < kTileK / 16; ++s)
    ptx::wgmma_m64n128k16_bf16<kA, kB>(d, TileLayout<kA>::descriptor(stage, 64 * warpgroup, s),
                                       TileLayout<kB>::descriptor(stage + kTileBytes, 0, s),
                                       accumulate || s > 0);
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<1>();
  ptx::wgmma_fence_operands(d);
}

__device__ __forceinline__ void finish(float (&d)[64]) {
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operands(d);
}

// Where a thread's accumulators are in the block's tile (ptx_sm90.cuh's fragment layout):
// d[4j + 2h] and d[4j + 2h + 1] are row(h), columns col(j) and col(j) + 1.
struct Fragment {
  int warpgroup, warp, g, t;  // warp: within the warpgroup
  __device__ explicit Fragment(int tid)
      : warpgroup(tid / 128), warp(tid / 32 % 4), g(tid % 32 / 4), t(tid % 4) {}
  __device__ int row(int h) const { return 64 * warpgroup + 16 * warp + g + 8 * h; }
  __device__ int col(int j) const { return 8 * j + 2 * t; }
};

#endif  // DDPM_HAS_SM90A_WGMMA

}  // namespace ddpm::cuda::sm90
