// The tensor maps of Hopper's bulk tensor copy (TMA), emulated: the driver's
// cuTensorMapEncodeTiled and cuTensorMapEncodeIm2col and the types of cuda.h they take, so
// that kernels/cuda/tensor_map.cu is compiled unchanged here, and what ptx_sm90.h's
// cp.async.bulk.tensor reads back.
//
// On a GPU a CUtensorMap is 128 opaque bytes the driver writes and the copy engine reads.
// Here the same bytes hold the encoder's arguments (TensorMapFields), checked first with
// the driver's documented rules for what the engine uses (cuTensorMapEncodeTiled in the CUDA
// Driver API reference): a 16-byte aligned address, ranks 1-5, dimensions 1..2^32, strides
// multiples of 16 bytes under 2^40, boxes of 1-256 elements whose inner row is a multiple of
// 16 bytes (and at most the swizzle's span), element strides 1-8. The im2col encoder
// (cuTensorMapEncodeIm2col, same reference) takes ranks 3-5 and, for the box, the
// bounding box's corners (rank - 2 of them, within [-2^15, 2^15), [-2^7, 2^7) or [-2^4, 2^4)
// at ranks 3, 4 and 5; the box not empty), at most 256 channels a pixel and 1024 pixels a
// column. A violation returns CUDA_ERROR_INVALID_VALUE, as the driver does.
// Emulated copies: element strides of 1, no interleave, and either no swizzle or the
// 128-byte one on rows of exactly 128 bytes (what the engine uses); anything else traps.
#pragma once

#include <cstdint>

typedef uint32_t cuuint32_t;
typedef uint64_t cuuint64_t;
#define CUDAAPI

enum CUresult { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1 };

// The driver's is 64-byte aligned; here 8 is enough (nothing reads it but the emulation),
// and g++ notes a change of ABI at every by-value parameter of a 64-byte aligned type.
struct CUtensorMap {
  cuuint64_t opaque[16];
};
enum CUtensorMapDataType {
  CU_TENSOR_MAP_DATA_TYPE_UINT8 = 0,
  CU_TENSOR_MAP_DATA_TYPE_UINT16,
  CU_TENSOR_MAP_DATA_TYPE_UINT32,
  CU_TENSOR_MAP_DATA_TYPE_INT32,
  CU_TENSOR_MAP_DATA_TYPE_UINT64,
  CU_TENSOR_MAP_DATA_TYPE_INT64,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT64,
  CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
};
enum CUtensorMapInterleave {
  CU_TENSOR_MAP_INTERLEAVE_NONE = 0,
  CU_TENSOR_MAP_INTERLEAVE_16B,
  CU_TENSOR_MAP_INTERLEAVE_32B,
};
enum CUtensorMapSwizzle {
  CU_TENSOR_MAP_SWIZZLE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_32B,
  CU_TENSOR_MAP_SWIZZLE_64B,
  CU_TENSOR_MAP_SWIZZLE_128B,
};
enum CUtensorMapL2promotion {
  CU_TENSOR_MAP_L2_PROMOTION_NONE = 0,
  CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
  CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
};
enum CUtensorMapFloatOOBfill {
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0,
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA,
};

namespace cuda_emu {

// What an emulated CUtensorMap holds: the encoder's checked arguments. An im2col map keeps
// its channels a pixel in box[0] and its pixels a column in box[1], and its bounding box's
// corners in the order of the dimensions (W first: the same order as dims, one a spatial
// dimension, dims[1..rank-2]).
struct TensorMapFields {
  uint64_t magic;  // kTensorMapMagic: made by one of the encoders below
  const unsigned char* address;
  uint8_t rank, element_bytes, swizzle, interleave;  // (the last two: the enums' values)
  bool im2col;
  uint64_t dims[5];
  uint64_t strides[4];  // bytes between consecutive indices of dimensions 1..4
  uint16_t box[5];
  uint8_t element_strides[5];
  int16_t lower[3], upper[3];  // im2col: the bounding box's corners (W, H, D)
};
static_assert(sizeof(TensorMapFields) <= sizeof(CUtensorMap), "fits the opaque bytes");
constexpr uint64_t kTensorMapMagic = 0x5044444d544d4150ull;

CUresult CUDAAPI tensor_map_encode_tiled(
    CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
    const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
    const cuuint32_t* element_strides, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
    CUtensorMapL2promotion l2_promotion, CUtensorMapFloatOOBfill oob_fill);

CUresult CUDAAPI tensor_map_encode_im2col(
    CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
    const cuuint64_t* dims, const cuuint64_t* strides, const int* lower_corner,
    const int* upper_corner, cuuint32_t channels_per_pixel, cuuint32_t pixels_per_column,
    const cuuint32_t* element_strides, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
    CUtensorMapL2promotion l2_promotion, CUtensorMapFloatOOBfill oob_fill);

// The fields of a map an encoder made, or null (the copy then traps).
const TensorMapFields* tensor_map_fields(const CUtensorMap* map);

}  // namespace cuda_emu
