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
// and an 8 x T tile of B, each thread T / 32 elements of each:
//   A: element e = t + 256 r is GEMM row e / 8 and k e % 8: consecutive threads read
//      consecutive k, i.e. consecutive channels (the loads coalesce). The tile is kept
//      transposed, as[k][row], so that 4 of a thread's rows are one 16-byte read. A row of
//      as is T floats plus 4 of padding: without them the 8 k of 4 rows that a warp
//      stores are T floats apart, 4 banks between 32 lanes (8-way conflicts); with them k
//      moves a store T + 4 floats, 4 banks, so k (8 values) and row (4) give 32 banks.
//   B: element e is k e / T and column e % T: consecutive threads, consecutive columns,
//      both in memory and in bs[k][column] (32 banks, no padding needed).
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
constexpr int kPadA = 4;       // floats after each row of as

struct TileIndex {
  int outer;  // A: the tile's row; B: its k
  int inner;  // A: k; B: the column
};

template <int M>  // outputs a thread owns per dimension: 4 or 8
struct Layout {
  static constexpr int kMicro = M;
  static constexpr int kTile = 16 * kMicro;           // rows and columns of the block's tile
  static constexpr int kShare = kTile * kTileK / kThreads;  // elements a thread stages a tile
  static constexpr int kRowA = kTile + kPadA;          // as's row stride
  static constexpr int kTileAFloats = kTileK * kRowA;  // one stage of as
  static constexpr int kTileBFloats = kTileK * kTile;  // one stage of bs
  static_assert(kMicro % kGroup == 0 && kShare * kThreads == kTile * kTileK,
                "whole runs of 4 outputs, whole shares of each tile");
  static_assert(kRowA % 4 == 0, "a run of 4 rows of A stays one aligned 16-byte read");

  // Thread t's r-th element of A's tile and of B's tile.
  static DDPM_HD TileIndex a_element(int t, int r) {
    const int e = t + r * kThreads;
    return {e / kTileK, e % kTileK};
  }
  static DDPM_HD TileIndex b_element(int t, int r) {
    const int e = t + r * kThreads;
    return {e / kTile, e % kTile};
  }
  // Where A's (row, k) and B's (k, column) sit in their stage of shared memory, in floats.
  static DDPM_HD int a_offset(int row, int k) { return k * kRowA + row; }
  static DDPM_HD int b_offset(int k, int column) { return k * kTile + column; }
  // The i-th of the kMicro rows (columns) thread t owns.
  static DDPM_HD int row(int t, int i) {
    return kGroup * (t / 16) + 16 * kGroup * (i / kGroup) + i % kGroup;
  }
  static DDPM_HD int column(int t, int j) {
    return kGroup * (t % 16) + 16 * kGroup * (j / kGroup) + j % kGroup;
  }
};

}  // namespace ddpm::tiled
