// The shared-memory tiles of convolution v2 (gemm_tiled in kernels/cuda/conv2d.cu): who
// stages which element of a K step's tiles, where it goes, and which outputs a thread owns.
// Host and device code, so that a CPU test (tests/test_conv2d_tiled_layout.cpp) can check
// the layout's bank arithmetic for every warp: the emulation cannot count plain shared
// loads and stores (docs/kernels.md, "Bank conflicts, counted without a GPU").
//
// A block of 256 threads (16 x 16) computes a T x T tile of C, each thread M x M outputs:
// T = 64, M = 4 (the first tiled kernel) or T = 128, M = 8 (the same work per block read
// from shared memory by a quarter as many threads per output: 4 times the products per
// staged element and per shared-memory read). Per K step of 8 it stages a T x 8 tile of A
// and an 8 x T tile of B, each thread T / 32 elements of each. Both tiles are stored the
// same way, [k][side] (side: A's row, B's column), so that 4 of a thread's rows or columns
// are one 16-byte read, each k's row padded by 4 floats (below).
// Which thread loads which element follows the operand's memory: consecutive threads read
// consecutive addresses, so a warp's loads cover the fewest 32-byte sectors.
//   along k (element e = t + 256 r is side e / 8, k e % 8): the forward's and the dgrad's
//      A (a pixel's channels), the dgrad's B (w[tap, ci, co] walked over co);
//   along the side (side e % T, k e / T): the wgrad's A (x: its rows are channels), the
//      forward's B (the weights' rows of Cout) and the wgrad's (dy's rows).
// (Walked along the side, the dgrad's B read each weight from a sector of its own, 32 a
// warp instruction where 4 hold the data; the wgrad's A 8 where 4 do.)
// The padding: walked along k, a warp stores 8 k of 4 sides; with rows of T floats those
// are T floats apart, 4 banks between 32 lanes (8-way conflicts); with T + 4, k moves a
// store 4 banks, so k (8 values) and side (4) give 32 banks. Walked along the side, a
// warp's 32 stores are 32 consecutive floats of one k: 32 banks either way.
// Thread t = 16 ty + tx owns rows 4 ty + 64 g + i and columns 4 tx + 64 h + j (i, j < 4;
// g, h < M / 4): per k, M / 4 16-byte reads of A and as many of B. Groups of 4 that are
// 64 apart, not 8 adjacent values, so that a warp's 16 tx read 256 contiguous bytes of
// B per instruction (8 adjacent floats a thread would put tx and tx + 4 on the same
// banks), and its 2 ty read two addresses of A, which are broadcast.
#pragma once

#include "kernels/host_device.h"

namespace ddpm::tiled {

constexpr int kThreads = 256;  // 16 x 16
constexpr int kTileK = 8;      // k per stage
constexpr int kGroup = 4;      // a thread's outputs come in runs of 4: one float4 each
constexpr int kPad = 4;       // floats after each k's row of a tile

// An element of a tile: its place along the tile's side (A: row; B: column) and along k.
struct TileElement {
  int side;
  int k;
};

template <int M>  // outputs a thread owns per dimension: 4 or 8
struct Layout {
  static constexpr int kMicro = M;
  static constexpr int kTile = 16 * kMicro;             // rows and columns of the block's tile
  static constexpr int kShare = kTile * kTileK / kThreads;  // elements a thread stages a tile
  static constexpr int kRow = kTile + kPad;            // a k's row of a tile, padded
  static constexpr int kStageFloats = kTileK * kRow;    // one stage of one tile
  static_assert(kMicro % kGroup == 0 && kShare * kThreads == kTile * kTileK,
                "whole runs of 4 outputs, whole shares of each tile");
  static_assert(kRow % 4 == 0, "a run of 4 rows or columns stays one aligned 16-byte read");

  // Thread t's r-th element of a tile, walked along k or along the side (above). Element
  // e = t + 256 r: its k (along k) or side (along the side) is t's alone, since 256 is a
  // multiple of both 8 and the tile. gemm_tiled relies on it: walked along k, it splits a
  // thread's k into (tap, channel) once a K step for all of the thread's elements.
  static_assert(kThreads % kTileK == 0 && kThreads % kTile == 0,
                "a thread's elements share their k (along k) or their side (along the side)");
  template <bool kAlongK>
  static DDPM_HD TileElement element(int t, int r) {
    const int e = t + r * kThreads;
    return kAlongK ? TileElement{e / kTileK, t % kTileK} : TileElement{t % kTile, e / kTile};
  }
  // The walks in runs (gemm_tiled's kRuns): thread t's share of a tile is one run of kShare
  // consecutive elements along the operand's memory, loaded at once (a float4 on 128x128
  // tiles, a float2 on 64x64): along k, kShare k of one side; along the side, kShare sides
  // of one k. Its r-th element:
  static constexpr int kRunsAlongK = kTileK / kShare;   // runs in a side's 8 k
  static constexpr int kRunsAlongSide = kTile / kShare;  // runs in a k's row of the tile
  static_assert(kRunsAlongK * kShare == kTileK && kRunsAlongSide * kShare == kTile &&
                    kRunsAlongK * kTile == kThreads && kRunsAlongSide * kTileK == kThreads,
                "one run a thread covers a tile, walked either way");
  template <bool kAlongK>
  static DDPM_HD TileElement run_element(int t, int r) {
    return kAlongK ? TileElement{t / kRunsAlongK, t % kRunsAlongK * kShare + r}
                   : TileElement{t % kRunsAlongSide * kShare + r, t / kRunsAlongSide};
  }
  // Where (side, k) sits in its stage of shared memory, in floats: A's and B's alike.
  static DDPM_HD int offset(int side, int k) { return k * kRow + side; }
  // The i-th of the kMicro rows (columns) thread t owns.
  static DDPM_HD int row(int t, int i) {
    return kGroup * (t / 16) + 16 * kGroup * (i / kGroup) + i % kGroup;
  }
  static DDPM_HD int column(int t, int j) {
    return kGroup * (t % 16) + 16 * kGroup * (j / kGroup) + j % kGroup;
  }
};

}  // namespace ddpm::tiled
