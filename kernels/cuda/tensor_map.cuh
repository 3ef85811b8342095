// Tensor maps for Hopper's bulk tensor copy (TMA, ptx_sm90.cuh's tma_load_2d): what the copy
// engine needs to know of a tensor in global memory (its address, sizes and strides) and of
// the box one copy moves into shared memory (its sizes and swizzle), encoded on the host by
// the driver's cuTensorMapEncodeTiled (or cuTensorMapEncodeIm2col, below) and handed to a
// kernel as a __grid_constant__ parameter.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace ddpm::cuda {

// A map of the row-major bf16 matrix at `base` (rows x cols, rows `cols` elements apart) whose
// box is box_rows rows of 64 columns: one 128-byte row of the 128-byte swizzle per row of
// the box (chunk c of box row r lands at c ^ (r % 8): ptx::Sw128, the layout wgmma reads).
// Elements outside the matrix are copied as zeros. Needs base 16-byte aligned and cols a
// multiple of 8 (rows 16-byte aligned), box_rows 1..256; a refusal names `what` and the value.
CUtensorMap bf16_tensor_map_sw128(const void* base, int64_t rows, int64_t cols, int box_rows,
                                  const char* what);
// The same for `planes` such matrices one after another (planes x rows x cols, rank 3), the
// box box_rows rows of 64 columns of one plane (coordinates {column, row, plane}).
CUtensorMap bf16_planes_tensor_map_sw128(const void* base, int64_t planes, int64_t rows,
                                         int64_t cols, int box_rows, const char* what);

// An NHWC bf16 tensor (n x h x w x c, densely packed) as the copy engine's im2col mode
// reads it (ptx_sm90.cuh's tma_load_im2col_4d): boxes of `pixels` rows of 64 channels, one
// 128-byte row of the 128-byte swizzle per pixel (ptx::Sw128, K-major as wgmma reads it).
// The bounding box of the filter's base runs from `lower` to size - 1 + `upper` along both
// W and H: for a stride-1 convolution, lower = -pad and upper = pad' - (k - 1), pad' the
// padding at the far side. One value for both dimensions: the driver documents its corner
// arrays as "{D, H, W}" while its sizes go W first, so a map whose corners differ between H
// and W would depend on which order it means; with equal ones it cannot.
struct Im2colBox {
  int64_t n, h, w, c;
  int lower, upper;
  int pixels;
};
CUtensorMap bf16_im2col_tensor_map_sw128(const void* base, const Im2colBox& box,
                                         const char* what);

}  // namespace ddpm::cuda
