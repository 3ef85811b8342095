// Convolution v2's shared-memory layout (kernels/conv2d_tiled_layout.h), both tile sizes
// and both ways of walking a tile, checked warp by warp as the kernel uses it: every element
// of a K step's tiles staged by exactly one thread, every output owned by exactly one; each
// warp's loads walking memory, its stores on 32 different banks; each 16-byte read aligned,
// and a warp's reads of B one run of contiguous bytes. Shared memory serves a warp's 4-byte
// accesses to 32 different banks (address / 4 mod 32) in one wavefront; k accesses to one
// bank take k. The emulation cannot count plain shared loads and stores (docs/kernels.md),
// so the arithmetic is checked here.
#include <gtest/gtest.h>

#include <set>
#include <type_traits>
#include <vector>

#include "kernels/conv2d_tiled_layout.h"

namespace ddpm {
namespace {

using tiled::kThreads;
using tiled::kTileK;

// Thread t's r-th element of a tile: element by element (Layout::element) or in runs
// (Layout::run_element), walked along k or along the side.
template <class L, bool kAlongK, bool kRuns>
tiled::TileElement staged_by(int t, int r) {
  return kRuns ? L::template run_element<kAlongK>(t, r) : L::template element<kAlongK>(t, r);
}

// The check for each tile size (64x64, 128x128) and each direction of the walk.
template <class Check>
void for_each_tile_and_direction(Check check) {
  check(tiled::Layout<4>{}, std::true_type{});
  check(tiled::Layout<4>{}, std::false_type{});
  check(tiled::Layout<8>{}, std::true_type{});
  check(tiled::Layout<8>{}, std::false_type{});
}

// Walked any way, each element of a tile is staged by exactly one thread.
template <class L, bool kAlongK, bool kRuns>
void expect_every_element_staged_once() {
  std::vector<int> staged(L::kStageFloats, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < L::kShare; ++r) {
      const tiled::TileElement e = staged_by<L, kAlongK, kRuns>(t, r);
      ASSERT_TRUE(e.side >= 0 && e.side < L::kTile && e.k >= 0 && e.k < kTileK);
      ++staged[L::offset(e.side, e.k)];
    }
  for (int side = 0; side < L::kTile; ++side)
    for (int k = 0; k < kTileK; ++k)
      EXPECT_EQ(staged[L::offset(side, k)], 1)
          << side << ", " << k << (kAlongK ? " along k" : "") << (kRuns ? " in runs" : "");
}

template <class L>
void expect_every_output_owned_once() {
  std::vector<int> owners(L::kTile * L::kTile, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < L::kMicro; ++i)
      for (int j = 0; j < L::kMicro; ++j) ++owners[L::row(t, i) * L::kTile + L::column(t, j)];
  for (int v : owners) ASSERT_EQ(v, 1);
}

// Each warp's r-th load walks memory: along k, 8 lanes a side read its 8 consecutive k (one
// 32-byte sector of 8 floats, 4 sides a warp); along the side, 32 lanes read 32 consecutive
// sides of one k. And its stores into the tile hit 32 different banks.
template <class L, bool kAlongK>
void expect_coalesced_loads_and_conflict_free_stores() {
  for (int w = 0; w < kThreads / 32; ++w)
    for (int r = 0; r < L::kShare; ++r) {
      std::set<int> banks;
      const tiled::TileElement first = L::template element<kAlongK>(32 * w, r);
      for (int lane = 0; lane < 32; ++lane) {
        const tiled::TileElement e = L::template element<kAlongK>(32 * w + lane, r);
        if (kAlongK) {
          EXPECT_EQ(e.k, lane % kTileK);
          EXPECT_EQ(e.side, first.side + lane / kTileK);
        } else {
          EXPECT_EQ(e.k, first.k);
          EXPECT_EQ(e.side, first.side + lane);
        }
        banks.insert(L::offset(e.side, e.k) % 32);
      }
      EXPECT_EQ(banks.size(), 32u) << "warp " << w << ", element " << r
                                   << (kAlongK ? ", along k" : ", along the side");
    }
}

// Each 16-byte read (a run of 4 rows of A, 4 columns of B) is aligned; per instruction a
// warp reads B as one run of 256 contiguous bytes (16 float4 in 2 wavefronts, the least for
// 256 bytes) and A at 2 addresses (broadcast to the lanes that share them).
template <class L>
void expect_aligned_contiguous_reads() {
  for (int w = 0; w < kThreads / 32; ++w)
    for (int g = 0; g < L::kMicro; g += tiled::kGroup)
      for (int k = 0; k < kTileK; ++k) {
        std::set<int> a_reads, b_reads;
        for (int lane = 0; lane < 32; ++lane) {
          const int t = 32 * w + lane;
          const int a = L::offset(L::row(t, g), k), b = L::offset(L::column(t, g), k);
          ASSERT_EQ(a % 4, 0);
          ASSERT_EQ(b % 4, 0);
          for (int i = 1; i < tiled::kGroup; ++i) {  // the run is the next 4 outputs
            ASSERT_EQ(L::offset(L::row(t, g + i), k), a + i);
            ASSERT_EQ(L::offset(L::column(t, g + i), k), b + i);
          }
          a_reads.insert(a);
          b_reads.insert(b);
        }
        EXPECT_EQ(a_reads.size(), 2u) << "warp " << w << ", run " << g;
        ASSERT_EQ(b_reads.size(), 16u);
        EXPECT_EQ(*b_reads.rbegin() - *b_reads.begin(), 60) << "warp " << w << ", run " << g;
      }
}

TEST(Conv2dTiledLayout, EveryElementIsStagedOnceAndEveryOutputOwnedOnce) {
  for_each_tile_and_direction([](auto layout, auto along_k) {
    expect_every_element_staged_once<decltype(layout), decltype(along_k)::value, false>();
  });
  expect_every_output_owned_once<tiled::Layout<4>>();
  expect_every_output_owned_once<tiled::Layout<8>>();
}

TEST(Conv2dTiledLayout, LoadsWalkMemoryAndStoresHit32Banks) {
  for_each_tile_and_direction([](auto layout, auto along_k) {
    expect_coalesced_loads_and_conflict_free_stores<decltype(layout), decltype(along_k)::value>();
  });
}

TEST(Conv2dTiledLayout, ReadsAreAlignedRunsAndBIsContiguous) {
  expect_aligned_contiguous_reads<tiled::Layout<4>>();
  expect_aligned_contiguous_reads<tiled::Layout<8>>();
}

// Walked in runs (a thread's share one 16-byte run, 8-byte on 64x64 tiles): every element
// staged once; each thread's run is kShare consecutive elements along memory (consecutive k
// of one side, or consecutive sides of one k), aligned to the run; a warp's runs follow one
// another along memory (along k, a side's 8 k are kRunsAlongK runs; along the side, the
// warp's 32 runs are contiguous). Stored along k, a run is kShare scalars kRow apart, and a
// warp's r-th stores hit 32 different banks; along the side, a run is one aligned 16- or
// 8-byte store, and a warp's are one contiguous stretch, the fewest wavefronts for its bytes
// (its r-th scalars would land 4 or 2 to a bank).
template <class L, bool kAlongK>
void expect_runs_along_memory_and_conflict_free_stores() {
  expect_every_element_staged_once<L, kAlongK, true>();
  for (int t = 0; t < kThreads; ++t) {
    const tiled::TileElement first = L::template run_element<kAlongK>(t, 0);
    ASSERT_EQ((kAlongK ? first.k : first.side) % L::kShare, 0) << "an aligned run";
    for (int r = 0; r < L::kShare; ++r) {
      const tiled::TileElement e = L::template run_element<kAlongK>(t, r);
      EXPECT_EQ(e.side, first.side + (kAlongK ? 0 : r));
      EXPECT_EQ(e.k, first.k + (kAlongK ? r : 0));
    }
    if (t % 32 == 0) continue;
    const tiled::TileElement before = L::template run_element<kAlongK>(t - 1, 0);
    if (kAlongK && t % L::kRunsAlongK != 0) {  // the side's next run
      EXPECT_EQ(first.side, before.side);
      EXPECT_EQ(first.k, before.k + L::kShare);
    } else if (kAlongK) {  // the next side, from its first k
      EXPECT_EQ(first.side, before.side + 1);
      EXPECT_EQ(first.k, 0);
    } else {
      EXPECT_EQ(first.k, before.k);
      EXPECT_EQ(first.side, before.side + L::kShare);
    }
  }
  for (int w = 0; w < kThreads / 32; ++w) {
    if (!kAlongK) {
      const tiled::TileElement first = L::template run_element<kAlongK>(32 * w, 0);
      for (int lane = 0; lane < 32; ++lane) {
        const tiled::TileElement e = L::template run_element<kAlongK>(32 * w + lane, 0);
        ASSERT_EQ(L::offset(e.side, e.k) % L::kShare, 0) << "an aligned vector store";
        EXPECT_EQ(L::offset(e.side, e.k), L::offset(first.side, first.k) + lane * L::kShare);
      }
      continue;
    }
    for (int r = 0; r < L::kShare; ++r) {
      std::set<int> banks;
      for (int lane = 0; lane < 32; ++lane) {
        const tiled::TileElement e = L::template run_element<kAlongK>(32 * w + lane, r);
        banks.insert(L::offset(e.side, e.k) % 32);
      }
      EXPECT_EQ(banks.size(), 32u) << "warp " << w << ", element " << r;
    }
  }
}

TEST(Conv2dTiledLayout, RunsWalkMemoryAndTheirStoresHit32Banks) {
  for_each_tile_and_direction([](auto layout, auto along_k) {
    expect_runs_along_memory_and_conflict_free_stores<decltype(layout),
                                                      decltype(along_k)::value>();
  });
}

// What the padding is for: without it, the stores of a tile walked along k pile 8 lanes on
// each of 4 banks.
TEST(Conv2dTiledLayout, WithoutThePaddingStoresAlongKConflict) {
  using L = tiled::Layout<4>;
  std::set<int> banks;
  for (int lane = 0; lane < 32; ++lane) {
    const tiled::TileElement e = L::element<true>(lane, 0);
    banks.insert((e.k * L::kTile + e.side) % 32);  // a row stride of kTile floats
  }
  EXPECT_EQ(banks.size(), 4u);
}

}  // namespace
}  // namespace ddpm
