// What the flash kernels on Hopper's wgmma share (attention_flash_wgmma.cu, the forward;
// attention_flash_wgmma_backward.cu): where a block's head is in the packed qkv, the
// copy engine's requests for a stage's two tiles of rows, and the register-form product
// that takes P (or dS) from the accumulators. Compiled into sm_90a code only
// (ptx_sm90.cuh).
#pragma once

#include <cuda.h>  // CUtensorMap

#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/wgmma_tile.cuh"
#include "kernels/shapes.h"

namespace ddpm::cuda::flash {

constexpr int kBox = 64;  // a copy's box: 64 rows of 64 channels, one 128-byte swizzled row each
constexpr int kBoxBytes = kBox * ptx::Sw128::kRowBytes;  // 8 KB

// The block's sample b and head h (grid y = b H + h), and the first columns of its head's
// q, k and v in a row of the packed qkv (3C), for head dim D.
struct Head {
  int b, h, q, k, v;
  __device__ Head(const AttentionShape& s, int d)
      : b(static_cast<int>(blockIdx.y) / static_cast<int>(s.heads)),
        h(static_cast<int>(blockIdx.y) % static_cast<int>(s.heads)),
        q(h * d),
        k(static_cast<int>(s.c) + q),
        v(static_cast<int>(s.c) + k) {}
};

#if DDPM_HAS_SM90A_WGMMA
// acc (64 rows x 64 kPanels channels over the warpgroup, m16n8 n-tiles of 4 floats a
// thread) += A B, waited for: A the 64 x 64 left operand in registers, four 16-column
// fragments (flash::p_fragment: P, P^T or dS^T straight from a product's accumulators); B
// the tile at descriptor b, MN-major, kPanels panels of 64 rows (its k) by 64 channels. One
// register-form wgmma.m64n64k16 a panel and 16 of k (two 8-row atoms of the panel), one
// group. The forward's O += P V, the backward's dv += P^T dout and dk += dS^T Q.
template <int kPanels>
__device__ __forceinline__ void accumulate_panels(float (&acc)[8 * kPanels][4],
                                                  uint32_t (&a)[4][4], uint64_t b) {
  using ptx::Sw128;
  float(&flat)[32 * kPanels] = reinterpret_cast<float(&)[32 * kPanels]>(acc);
  ptx::wgmma_fence_operands(flat);
  ptx::wgmma_fence();
#pragma unroll
  for (int panel = 0; panel < kPanels; ++panel)
#pragma unroll
    for (int kc = 0; kc < 4; ++kc)
      ptx::wgmma_m64n64k16_bf16_rs<Major::MN>(
          reinterpret_cast<float(&)[32]>(acc[8 * panel]), a[kc],
          Sw128::moved(b, panel * sm90::TileLayout<Major::MN>::kPanelBytes +
                              2 * Sw128::kAtomBytes * kc),
          true);
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();  // before acc is read and before B's stage is reused
  ptx::wgmma_fence_operands(flat);
  ptx::wgmma_fence_operands(reinterpret_cast<uint32_t(&)[16]>(a));  // A's until the wait
}

// By one thread: rows row0..row0 + 63 of plane b, `columns` boxes of 64 channels from column
// col_x of map_x, then as many from col_y of map_y, into dst one box after another (x's,
// then y's), every byte counted on the mbarrier bar (the caller's expect_tx covers them).
__device__ __forceinline__ void request_row_tiles(ptx::SharedAddress dst, int columns,
                                                  const CUtensorMap* map_x, int col_x,
                                                  const CUtensorMap* map_y, int col_y,
                                                  int row0, int b, ptx::SharedAddress bar) {
  for (int c = 0; c < columns; ++c) {
    ptx::tma_load_3d(dst + c * kBoxBytes, map_x, col_x + kBox * c, row0, b, bar);
    ptx::tma_load_3d(dst + (columns + c) * kBoxBytes, map_y, col_y + kBox * c, row0, b, bar);
  }
}
#endif

}  // namespace ddpm::cuda::flash
