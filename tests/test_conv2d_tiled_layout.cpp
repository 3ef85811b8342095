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
#include <vector>

#include "kernels/conv2d_tiled_layout.h"

namespace ddpm {
namespace {

using tiled::kThreads;
using tiled::kTileK;

// Walked either way, each element of a tile is staged by exactly one thread.
template <class L, bool kAlongK>
void expect_every_element_staged_once() {
  std::vector<int> staged(L::kStageFloats, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < L::kShare; ++r) {
      const tiled::TileElement e = L::template element<kAlongK>(t, r);
      ASSERT_TRUE(e.side >= 0 && e.side < L::kTile && e.k >= 0 && e.k < kTileK);
      ++staged[L::offset(e.side, e.k)];
    }
  for (int side = 0; side < L::kTile; ++side)
    for (int k = 0; k < kTileK; ++k)
      EXPECT_EQ(staged[L::offset(side, k)], 1) << side << ", " << k << (kAlongK ? " along k" : "");
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
  expect_every_element_staged_once<tiled::Layout<4>, true>();
  expect_every_element_staged_once<tiled::Layout<4>, false>();
  expect_every_element_staged_once<tiled::Layout<8>, true>();
  expect_every_element_staged_once<tiled::Layout<8>, false>();
  expect_every_output_owned_once<tiled::Layout<4>>();
  expect_every_output_owned_once<tiled::Layout<8>>();
}

TEST(Conv2dTiledLayout, LoadsWalkMemoryAndStoresHit32Banks) {
  expect_coalesced_loads_and_conflict_free_stores<tiled::Layout<4>, true>();
  expect_coalesced_loads_and_conflict_free_stores<tiled::Layout<4>, false>();
  expect_coalesced_loads_and_conflict_free_stores<tiled::Layout<8>, true>();
  expect_coalesced_loads_and_conflict_free_stores<tiled::Layout<8>, false>();
}

TEST(Conv2dTiledLayout, ReadsAreAlignedRunsAndBIsContiguous) {
  expect_aligned_contiguous_reads<tiled::Layout<4>>();
  expect_aligned_contiguous_reads<tiled::Layout<8>>();
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
