// Convolution v2's shared-memory layout (kernels/conv2d_tiled_layout.h), both tile sizes,
// checked warp by warp as the kernel uses it: every element of a K step's tiles staged by
// exactly one thread, every output owned by exactly one; the stores of each warp on 32
// different banks; each 16-byte read aligned, and a warp's reads of B one run of
// contiguous bytes. Shared memory serves a warp's 4-byte accesses to 32 different banks
// (address / 4 mod 32) in one wavefront; k accesses to one bank take k. The emulation
// cannot count plain shared loads and stores (docs/kernels.md), so the arithmetic is
// checked here.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "kernels/conv2d_tiled_layout.h"

namespace ddpm {
namespace {

using tiled::kThreads;
using tiled::kTileK;

template <class L>
void expect_every_element_staged_once() {
  std::vector<int> a(L::kTileAFloats, 0), b(L::kTileBFloats, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < L::kShare; ++r) {
      const tiled::TileIndex ea = L::a_element(t, r), eb = L::b_element(t, r);
      ASSERT_TRUE(ea.outer < L::kTile && ea.inner < kTileK && eb.outer < kTileK &&
                  eb.inner < L::kTile);
      ++a[L::a_offset(ea.outer, ea.inner)];
      ++b[L::b_offset(eb.outer, eb.inner)];
    }
  for (int row = 0; row < L::kTile; ++row)
    for (int k = 0; k < kTileK; ++k) EXPECT_EQ(a[L::a_offset(row, k)], 1) << row << ", " << k;
  for (int k = 0; k < kTileK; ++k)
    for (int col = 0; col < L::kTile; ++col)
      EXPECT_EQ(b[L::b_offset(k, col)], 1) << k << ", " << col;
}

template <class L>
void expect_every_output_owned_once() {
  std::vector<int> owners(L::kTile * L::kTile, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < L::kMicro; ++i)
      for (int j = 0; j < L::kMicro; ++j)
        ++owners[L::row(t, i) * L::kTile + L::column(t, j)];
  for (int v : owners) ASSERT_EQ(v, 1);
}

// The banks of warp w's r-th store into each tile: 32 different ones.
template <class L>
void expect_conflict_free_stores() {
  for (int w = 0; w < kThreads / 32; ++w)
    for (int r = 0; r < L::kShare; ++r) {
      std::set<int> a_banks, b_banks;
      for (int lane = 0; lane < 32; ++lane) {
        const tiled::TileIndex ea = L::a_element(32 * w + lane, r);
        const tiled::TileIndex eb = L::b_element(32 * w + lane, r);
        a_banks.insert(L::a_offset(ea.outer, ea.inner) % 32);
        b_banks.insert(L::b_offset(eb.outer, eb.inner) % 32);
      }
      EXPECT_EQ(a_banks.size(), 32u) << "A's store, warp " << w << ", element " << r;
      EXPECT_EQ(b_banks.size(), 32u) << "B's store, warp " << w << ", element " << r;
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
          const int a = L::a_offset(L::row(t, g), k), b = L::b_offset(k, L::column(t, g));
          ASSERT_EQ(a % 4, 0);
          ASSERT_EQ(b % 4, 0);
          for (int i = 1; i < tiled::kGroup; ++i) {  // the run is the next 4 outputs
            ASSERT_EQ(L::a_offset(L::row(t, g + i), k), a + i);
            ASSERT_EQ(L::b_offset(k, L::column(t, g + i)), b + i);
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
  expect_every_element_staged_once<tiled::Layout<4>>();
  expect_every_element_staged_once<tiled::Layout<8>>();
  expect_every_output_owned_once<tiled::Layout<4>>();
  expect_every_output_owned_once<tiled::Layout<8>>();
}

TEST(Conv2dTiledLayout, EachWarpsStoresHit32Banks) {
  expect_conflict_free_stores<tiled::Layout<4>>();
  expect_conflict_free_stores<tiled::Layout<8>>();
}

TEST(Conv2dTiledLayout, ReadsAreAlignedRunsAndBIsContiguous) {
  expect_aligned_contiguous_reads<tiled::Layout<4>>();
  expect_aligned_contiguous_reads<tiled::Layout<8>>();
}

// What the padding is for: without it, A's stores pile 8 lanes on each of 4 banks.
TEST(Conv2dTiledLayout, WithoutThePaddingAsStoresConflict) {
  using L = tiled::Layout<4>;
  std::set<int> banks;
  for (int lane = 0; lane < 32; ++lane) {
    const tiled::TileIndex e = L::a_element(lane, 0);
    banks.insert((e.inner * L::kTile + e.outer) % 32);  // a row stride of kTile floats
  }
  EXPECT_EQ(banks.size(), 4u);
}

}  // namespace
}  // namespace ddpm
