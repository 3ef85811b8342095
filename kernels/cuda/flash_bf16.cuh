// What the bf16 flash-attention kernels share (attention_flash_bf16.cu and, on Hopper,
// attention_flash_wgmma.cu, the forward; attention_flash_bf16_backward.cu): the softmax's
// base-2 constant, the forward's online softmax and output per warp, and the staging of f32
// rows (or bf16 rows, for bf16 activations) of the packed qkv (or dout) into padded bf16 rows
// of shared memory. bf16 pairs for mma operands and output pairs in either storage are
// storage.cuh's (bf16_pair, store_pair).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/shapes.h"

namespace ddpm::cuda::flash {

// The softmax's exponentials in base 2: e^(s scale - m) = 2^(s (scale log2 e) - m log2 e),
// one FMA and exp2f (the multi-function unit's ex2, and a fix-up for tiny results), where
// expf(s * scale - m) was a multiply, a subtraction and expf's own range reduction, about
// ten instructions an element, in the loop that an H100 issues while its tensor cores run
// (FlashAttention-2 does the same). scripts/sass_loops.py counts the loops before and after
// (docs/kernels.md). The kernels keep their maxima and lse in natural units and scale them
// by kLog2e once per row, not per element.
constexpr float kLog2e = 1.4426950408889634f;

// How far (in base 2) the forward lets a row's running max lag behind its scores before it
// moves it and rescales the output: exponentials up to 2^8 = 256, far from fp32's range, and
// bf16 rounds P relative to its size whatever the scale (attention_flash_bf16.cu).
constexpr float kStaleMaxLog2 = 8.0f;

// What a device without the shared memory a head dim needs (sm_86 and sm_89 allow a block
// 99 KB; the backward at d = 256 takes 141) can run instead.
constexpr const char* kInstead =
    "precision fp32 or tf32 runs attention without the bf16 flash kernels";

// Shared-memory rows are D + 8 bf16: 16 bytes of padding put the 8 rows an ldmatrix 8x8
// matrix reads into 8 different 16-byte bank groups.
constexpr int kPad = 8;

// Four consecutive elements of global memory as two bf16 pairs: f32 (a float4 load,
// rounded) or bf16 bits (an 8-byte load, copied).
__device__ __forceinline__ uint2 load4_bf16(const float* p) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  return make_uint2(bf16_pair(v.x, v.y), bf16_pair(v.z, v.w));  // storage.cuh
}
__device__ __forceinline__ uint2 load4_bf16(const uint16_t* p) {
  return *reinterpret_cast<const uint2*>(p);
}

// The order a tile's rows are staged in, so that the stores of a warp meet no bank
// conflict. Shared memory serves a warp 128 bytes (one 4-byte word per bank) per wavefront:
// 16-byte copies (copy_rows) a quarter-warp at a time, 8-byte stores (stage_rows) a half-
// warp at a time, each in one wavefront when no two of its lanes hit the same bank. A
// padded row is 2D + 16 bytes. From D = 64 on, the lanes of a quarter (or half) write one
// row's consecutive bytes: no conflict. At D = 32 they cover two 64-byte rows, and rows r
// and r + 1 start 80 bytes apart, so the first row's first 16 bytes and the second row's
// last 16 share banks (0-3 at r = 0): two wavefronts for every quarter (half). Rows 4 apart
// start 320 bytes apart, 16 banks over, and their 64 bytes cannot meet: so at D = 32 each 8
// rows are staged in the order 0 4 1 5 2 6 3 7, the quarters (halves) pairing rows (0, 4),
// (1, 5), ... Global memory does not care: each row is still read whole by consecutive
// lanes. tile_rows must be a multiple of 8. The copies' wavefronts are counted by
// tests/cuda_emulation/test_bank_conflicts.cpp: 2.00 per quarter in the order 0 1 2 ...,
// 1.00 in this one (the emulator does not see plain stores; the same arithmetic applies).
template <int D>
__device__ __forceinline__ int in_bank_order(int r) {
  if constexpr (D == 32) return (r & ~7) | ((r & 7) >> 1) | ((r & 1) << 2);
  return r;
}

// The chunks of a tile (kTileRows rows of D elements, kElems elements a chunk) that thread
// threadIdx.x of a kThreads-thread block moves: chunk e = threadIdx.x + k kThreads (k = 0,
// 1, ...) is row e / kChunks (in_bank_order) at column kElems (e % kChunks). kThreads is a
// multiple of kChunks, so all of a thread's chunks sit in one column, kStep rows apart:
// row + k kStep. The copy loops below walk that, the division and the row's 64-bit multiply
// done once per tile, then an add, a compare and the move per chunk, unrolled; written as
// the loop over e, with both per chunk, they issued about 30 instructions per 16-byte copy
// (sm_90 SASS, scripts/sass_loops.py's inner loops; docs/kernels.md).
template <int D, int kElems, int kTileRows, int kThreads>
struct TileWalk {
  static constexpr int kChunks = D / kElems;         // per row
  static constexpr int kStep = kThreads / kChunks;   // rows between a thread's chunks
  static constexpr int kTrips = kTileRows / kStep;   // chunks a thread moves
  static_assert(kThreads % kChunks == 0 && kTileRows % kStep == 0,
                "a trip covers whole rows, and the tile whole trips");
  static_assert(D != 32 || kStep % 8 == 0, "in_bank_order permutes within 8 rows");
  int row, col;  // the thread's first chunk: row (in bank order), first element
  __device__ TileWalk()
      : row(in_bank_order<D>(static_cast<int>(threadIdx.x) / kChunks)),
        col(kElems * (static_cast<int>(threadIdx.x) % kChunks)) {}
};

// Rows [0, rows) of a tile from global memory (row r at src + r * stride, D elements, f32
// 16-byte aligned or bf16 8-byte aligned) into shared bf16 rows of D + kPad; rows
// [rows, kTileRows) zero, in_bank_order. A warp reads 512 (f32) or 256 (bf16) contiguous
// bytes of a row (at D = 32, whole rows of 128 or 64). All kThreads threads of the block
// (blockDim.x) take part; kTileRows a multiple of 8.
template <int D, int kTileRows, int kThreads, class A>
__device__ void stage_rows(uint16_t* dst, const A* src, int64_t stride, int rows) {
  using Walk = TileWalk<D, 4, kTileRows, kThreads>;
  const Walk w;
  const A* from = src + w.row * stride + w.col;
  uint16_t* const to = dst + w.row * (D + kPad) + w.col;
  const int left = rows - w.row;  // the thread's rows below `rows`: k kStep < left
  // Not unrolled: unrolled, ptxas kept a tile's float4 loads in flight at once on top of
  // the forward's O, past 128 registers at d = 128 and into spills under its launch bounds.
#pragma unroll 1
  for (int k = 0; k < Walk::kTrips; ++k, from += Walk::kStep * stride) {
    const uint2 v = k * Walk::kStep < left ? load4_bf16(from) : make_uint2(0u, 0u);
    *reinterpret_cast<uint2*>(to + k * Walk::kStep * (D + kPad)) = v;
  }
}

// The same rows of bf16 by cp.async (16 bytes, 8 bf16, per copy; rows past `rows` zero-
// filled by the copy itself): no registers, no wait here. The caller commits the group and
// waits for it (ptx.cuh); rows 16-byte aligned in global and shared memory; kTileRows a
// multiple of 8 (in_bank_order).
template <int D, int kTileRows, int kThreads>
__device__ void copy_rows(uint16_t* dst, const uint16_t* src, int64_t stride, int rows) {
  using Walk = TileWalk<D, 8, kTileRows, kThreads>;
  const Walk w;
  const uint16_t* from = src + w.row * stride + w.col;
  uint16_t* const to = dst + w.row * (D + kPad) + w.col;
  const int left = rows - w.row;  // (compared with immediates, not kTrips row registers)
#pragma unroll
  for (int k = 0; k < Walk::kTrips; ++k, from += Walk::kStep * stride) {
    const bool valid = k * Walk::kStep < left;
    ptx::cp_async_16(to + k * Walk::kStep * (D + kPad), valid ? from : src, valid);
  }
}

// dq by GEMM, the backward's dq where dS^T is in memory (attention.cuh): both backwards'
// (attention_flash_bf16_backward.cu, attention_flash_wgmma_backward.cu). Host side.
// The row length of the dS buffer: L rounded up to 8 elements (rows 16-byte aligned).
int64_t ds_row_length(int64_t l);
// dq (in dqkv, bf16) = dS k by cuBLAS from ds[key][query] (ld ds_ld); added when `add`.
void dq_by_gemm(const AttentionShape& s, const uint16_t* qkv, const uint16_t* ds, int64_t ds_ld,
                uint16_t* dqkv, bool add);

// The forward's per-warp steps, shared by its two versions (attention_flash_bf16.cu on
// mma.sync, attention_flash_wgmma.cu on wgmma): both hold a warp's 16 query rows in the
// m16n8 accumulator layout, lane (g = lane / 4, t = lane % 4) rows g (e = 0, 1) and g + 8
// (e = 2, 3) of each 8-column n-tile: S as sc[n-tile of 8 keys][e], O as o[n-tile of 8
// channels][e], and per row the running max m (of the raw dot products) and sum l (this
// lane's columns only).
__device__ __forceinline__ float quad_max(float v) {  // over the 4 lanes of one row (same g)
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One key tile's online softmax, with `keys` of its kNT * 8 columns real (the rest masked):
//   m_new = max(m, rowmax S)     (the row's 4 lanes agree through two shuffles)
//   if m_new - m > 2^kStaleMaxLog2 / log2 e (scaled) for some row of the warp (a vote):
//     c = exp(m - m_new);  m = m_new;  l = l c;  O = O c
//   P = exp(S - m) in place of S;  l = l + rowsum P
// The running max moves only when a row's would otherwise leave exponentials above
// 2^kStaleMaxLog2 (FlashAttention-4's conditional rescale): P, l and O are all relative to
// the same m, so a stale m changes nothing but their scale, and out = O / l and lse =
// m scale + log l come out the same. Moving it costs the rescale of O, D / 2 multiplies a
// lane (128 at d = 256); past the first tile scores seldom jump that far, and the warp skips
// them all (the vote keeps it uniform). Each exponential is exp2 of one FMA, (s - m)
// scale log2 e (kLog2e).
template <int kNT, int kDT>
__device__ __forceinline__ void softmax_tile(float (&sc)[kNT][4], int keys, int t,
                                             float scale_log2, float (&m)[2], float (&l)[2],
                                             float (&o)[kDT][4]) {
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < kNT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = 8 * n + 2 * t + (e & 1);
      if (key >= keys) sc[n][e] = -INFINITY;
      tile_max[e / 2] = fmaxf(tile_max[e / 2], sc[n][e]);
    }
  float new_max[2];
  bool move = false;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    new_max[r] = fmaxf(m[r], quad_max(tile_max[r]));  // finite: the tile's first key exists
    move |= (new_max[r] - m[r]) * scale_log2 > kStaleMaxLog2;  // m = -inf: the first tile
  }
  if (__any_sync(0xffffffffu, move)) {
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      corr[r] = exp2f((m[r] - new_max[r]) * scale_log2);  // 0 on the first tile
      m[r] = new_max[r];
      l[r] *= corr[r];
    }
#pragma unroll
    for (int dn = 0; dn < kDT; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dn][e] *= corr[e / 2];
  }
  const float m_log2[2] = {m[0] * scale_log2, m[1] * scale_log2};
#pragma unroll
  for (int n = 0; n < kNT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // masked keys: exp2(-inf) = 0
      sc[n][e] = exp2f(fmaf(sc[n][e], scale_log2, -m_log2[e / 2]));
      l[e / 2] += sc[n][e];
    }
}

// P's 16-key chunk c as the A operand of O += P V, rounded to bf16 pairs: the accumulator
// layout of n-tiles 2c and 2c + 1 is the A fragment's of one k16 chunk (a[0] = A[g][2t..],
// a[1] = A[g+8][2t..], a[2], a[3] the same 8 keys on), so no lane needs another's values.
template <int kNT>
__device__ __forceinline__ void p_fragment(const float (&sc)[kNT][4], int c, uint32_t (&a)[4]) {
  a[0] = bf16_pair(sc[2 * c][0], sc[2 * c][1]);
  a[1] = bf16_pair(sc[2 * c][2], sc[2 * c][3]);
  a[2] = bf16_pair(sc[2 * c + 1][0], sc[2 * c + 1][1]);
  a[3] = bf16_pair(sc[2 * c + 1][2], sc[2 * c + 1][3]);
}

// out = O / l and lse = m scale + log l for the lane's rows g, g + 8 of the warp, whose row
// g is query i_g of head h of sample b (bh = b heads + h); l summed over the row's 4 lanes
// first. Rows past L are not stored.
template <int kDT, class A>
__device__ __forceinline__ void store_output(const AttentionShape& s, const float (&o)[kDT][4],
                                             float (&l)[2], const float (&m)[2], float scale,
                                             int64_t i_g, int64_t b, int64_t h, int t, A* out,
                                             float* lse) {
  constexpr int D = 8 * kDT;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    const int64_t i = i_g + 8 * r;
    if (i >= s.l) continue;
    A* const dst = out + (b * s.l + i) * s.c + h * D;
#pragma unroll
    for (int dn = 0; dn < kDT; ++dn)
      store_pair(dst, 8 * dn + 2 * t, {o[dn][2 * r] / l[r], o[dn][2 * r + 1] / l[r]});
    if (t == 0) lse[(b * s.heads + h) * s.l + i] = m[r] * scale + logf(l[r]);
  }
}

}  // namespace ddpm::cuda::flash
