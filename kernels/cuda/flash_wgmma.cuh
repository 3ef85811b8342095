// What the flash kernels on Hopper's wgmma share (attention_flash_wgmma.cu, the forward;
// attention_flash_wgmma_backward.cu): where a block's head is in the packed qkv, and the
// copy engine's requests for a stage's two tiles of rows. Compiled into sm_90a code only
// (ptx_sm90.cuh).
#pragma once

#include <cuda.h>  // CUtensorMap

#include "kernels/cuda/ptx_sm90.cuh"
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
