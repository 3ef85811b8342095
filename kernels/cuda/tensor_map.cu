// The driver's tensor-map encoders (tensor_map.cuh), reached through the runtime's
// cudaGetDriverEntryPointByVersion so that nothing links against the driver library itself
// (the CPU emulation hands out its own encoder the same way).
#include "kernels/cuda/tensor_map.cuh"

#include <cuda_runtime.h>

#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"

namespace ddpm::cuda {

namespace {

using EncodeTiled = CUresult(CUDAAPI*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                       const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                       const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                       CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

using EncodeIm2col = CUresult(CUDAAPI*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                        const cuuint64_t*, const cuuint64_t*, const int*,
                                        const int*, cuuint32_t, cuuint32_t, const cuuint32_t*,
                                        CUtensorMapInterleave, CUtensorMapSwizzle,
                                        CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's function `name`, whose ABI is CUDA 12.0's (both encoders appeared then).
void* driver_function(const char* name) {
  void* function = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  constexpr unsigned kSince = 12000;
  CUDA_CHECK(
      cudaGetDriverEntryPointByVersion(name, &function, kSince, cudaEnableDefault, &found));
  CHECK(found == cudaDriverEntryPointSuccess && function != nullptr,
        "the CUDA driver has no " << name << " (CUDA 12.0 or later is needed)");
  return function;
}

EncodeTiled encode_tiled() {
  static const auto encode =
      reinterpret_cast<EncodeTiled>(driver_function("cuTensorMapEncodeTiled"));
  return encode;
}

EncodeIm2col encode_im2col() {
  static const auto encode =
      reinterpret_cast<EncodeIm2col>(driver_function("cuTensorMapEncodeIm2col"));
  return encode;
}

// planes x rows x cols (rank 3, or 2 when planes is 0), boxes of box_rows x 64 columns.
CUtensorMap encode_sw128(const void* base, int64_t planes, int64_t rows, int64_t cols, int box_rows,
                         const char* what) {
  constexpr int kBoxCols = 64;  // 128 bytes of bf16: one row of the 128-byte swizzle
  constexpr int64_t kMaxSize = int64_t{1} << 32;
  const std::string size = (planes > 0 ? std::to_string(planes) + " x " : "") +
                           std::to_string(rows) + " x " + std::to_string(cols);
  CHECK(reinterpret_cast<uintptr_t>(base) % 16 == 0,
        what << ": a tensor map needs a 16-byte aligned address");
  CHECK(cols % 8 == 0, what << ": a tensor map needs rows of whole 16 bytes; " << cols
                            << " bf16 columns are not a multiple of 8");
  CHECK(rows >= 1 && cols >= 1 && rows <= kMaxSize && cols <= kMaxSize && planes <= kMaxSize &&
            planes >= 0,
        what << ": a tensor map's sizes are 1 to 2^32; this one is " << size);
  CHECK(box_rows >= 1 && box_rows <= 256, what << ": a box of " << box_rows << " rows (1 to 256)");
  const cuuint32_t rank = planes > 0 ? 3 : 2;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(planes)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(cols) * 2,          // bytes between rows
                                 static_cast<cuuint64_t>(rows * cols) * 2};  // and planes
  const cuuint32_t box[3] = {kBoxCols, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  CUtensorMap map;
  const CUresult result = encode_tiled()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, const_cast<void*>(base), dims, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  CHECK(result == CUDA_SUCCESS, what << ": cuTensorMapEncodeTiled refused a " << size
                                     << " bf16 tensor with boxes of " << box_rows << " x "
                                     << kBoxCols << " (CUresult " << result << ")");
  return map;
}

}  // namespace

CUtensorMap bf16_im2col_tensor_map_sw128(const void* base, const Im2colBox& b, const char* what) {
  constexpr int kChannels = 64;  // a pixel's 128 bytes of bf16: one row of the 128-byte swizzle
  const std::string size = std::to_string(b.n) + " x " + std::to_string(b.h) + " x " +
                           std::to_string(b.w) + " x " + std::to_string(b.c);
  CHECK(reinterpret_cast<uintptr_t>(base) % 16 == 0,
        what << ": a tensor map needs a 16-byte aligned address");
  CHECK(b.c % kChannels == 0, what << ": an im2col map here takes the channels in runs of "
                                   << kChannels << "; " << b.c << " are not a multiple");
  CHECK(b.n >= 1 && b.h >= 1 && b.w >= 1 && b.n <= (int64_t{1} << 32),
        what << ": an im2col map of an N x H x W x C tensor of " << size);
  CHECK(b.pixels >= 1 && b.pixels <= 1024,
        what << ": " << b.pixels << " pixels a column (1 to 1024)");
  CHECK(b.lower >= -128 && b.lower <= 127 && b.upper >= -128 && b.upper <= 127,
        what << ": the bounding box's corners " << b.lower << " and " << b.upper
             << " (a rank-4 map takes -128 to 127)");
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(b.c), static_cast<cuuint64_t>(b.w),
                              static_cast<cuuint64_t>(b.h), static_cast<cuuint64_t>(b.n)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(b.c) * 2,  // bytes between pixels,
                                 static_cast<cuuint64_t>(b.w * b.c) * 2,         // rows
                                 static_cast<cuuint64_t>(b.h * b.w * b.c) * 2};  // and images
  const int lower[2] = {b.lower, b.lower}, upper[2] = {b.upper, b.upper};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult result = encode_im2col()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(base), dims, strides, lower,
      upper, kChannels, static_cast<cuuint32_t>(b.pixels), element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  CHECK(result == CUDA_SUCCESS, what << ": cuTensorMapEncodeIm2col refused a " << size
                                     << " bf16 tensor with corners " << b.lower << ", "
                                     << b.upper << " and " << b.pixels
                                     << " pixels a column (CUresult " << result << ")");
  return map;
}

CUtensorMap bf16_tensor_map_sw128(const void* base, int64_t rows, int64_t cols, int box_rows,
                                  const char* what) {
  return encode_sw128(base, 0, rows, cols, box_rows, what);
}

CUtensorMap bf16_planes_tensor_map_sw128(const void* base, int64_t planes, int64_t rows,
                                         int64_t cols, int box_rows, const char* what) {
  CHECK(planes >= 1, what << ": a tensor of " << planes << " planes");
  return encode_sw128(base, planes, rows, cols, box_rows, what);
}

}  // namespace ddpm::cuda
