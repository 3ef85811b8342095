// The emulated cuTensorMapEncodeTiled and cuTensorMapEncodeIm2col (tensor_map.h): the
// driver's rules, then the arguments kept in the map's opaque bytes.
#include "tests/cuda_emulation/tensor_map.h"

#include <cstring>

namespace cuda_emu {

namespace {

uint32_t element_bytes(CUtensorMapDataType type) {
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
      return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
      return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
      return 4;
    case CU_TENSOR_MAP_DATA_TYPE_UINT64:
    case CU_TENSOR_MAP_DATA_TYPE_INT64:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT64:
      return 8;
  }
  return 0;
}

uint32_t swizzle_span(CUtensorMapSwizzle swizzle) {  // bytes; 0: none
  switch (swizzle) {
    case CU_TENSOR_MAP_SWIZZLE_NONE:
      return 0;
    case CU_TENSOR_MAP_SWIZZLE_32B:
      return 32;
    case CU_TENSOR_MAP_SWIZZLE_64B:
      return 64;
    case CU_TENSOR_MAP_SWIZZLE_128B:
      return 128;
  }
  return 0;
}

// What both encoders check and keep: the type, the address, and per dimension its size,
// its stride and its traversal stride. False for what the driver refuses.
bool encode_tensor(TensorMapFields& f, CUtensorMapDataType type, cuuint32_t rank, void* address,
                   const cuuint64_t* dims, const cuuint64_t* strides,
                   const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                   CUtensorMapSwizzle swizzle) {
  const uint32_t bytes = element_bytes(type);
  if (bytes == 0 || rank < 1 || rank > 5 || address == nullptr ||
      reinterpret_cast<uintptr_t>(address) % 16 != 0)
    return false;
  f = TensorMapFields{};
  f.magic = kTensorMapMagic;
  f.address = static_cast<const unsigned char*>(address);
  f.rank = static_cast<uint8_t>(rank);
  f.element_bytes = static_cast<uint8_t>(bytes);
  f.swizzle = static_cast<uint8_t>(swizzle);
  f.interleave = static_cast<uint8_t>(interleave);
  for (uint32_t i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t{1} << 32)) return false;
    if (element_strides[i] == 0 || element_strides[i] > 8) return false;
    f.dims[i] = dims[i];
    f.element_strides[i] = static_cast<uint8_t>(element_strides[i]);
    if (i > 0) {  // globalStrides[i - 1]: a multiple of 16 under 2^40
      if (strides[i - 1] % 16 != 0 || strides[i - 1] >= (uint64_t{1} << 40)) return false;
      f.strides[i - 1] = strides[i - 1];
    }
  }
  return true;
}

// A box's inner row (row_bytes) under the map's interleave and swizzle: whole 16 bytes, at
// most the swizzle's span.
bool row_fits(uint64_t row_bytes, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle) {
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return true;
  const uint32_t span = swizzle_span(swizzle);
  return row_bytes % 16 == 0 && (span == 0 || row_bytes <= span);
}

CUresult keep(CUtensorMap* map, const TensorMapFields& f) {
  std::memset(map, 0, sizeof *map);
  std::memcpy(map, &f, sizeof f);
  return CUDA_SUCCESS;
}

}  // namespace

CUresult CUDAAPI tensor_map_encode_tiled(CUtensorMap* map, CUtensorMapDataType type,
                                         cuuint32_t rank, void* address, const cuuint64_t* dims,
                                         const cuuint64_t* strides, const cuuint32_t* box,
                                         const cuuint32_t* element_strides,
                                         CUtensorMapInterleave interleave,
                                         CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
                                         CUtensorMapFloatOOBfill) {
  TensorMapFields f;
  if (map == nullptr || !encode_tensor(f, type, rank, address, dims, strides, element_strides,
                                       interleave, swizzle))
    return CUDA_ERROR_INVALID_VALUE;
  for (uint32_t i = 0; i < rank; ++i) {
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    f.box[i] = static_cast<uint16_t>(box[i]);
  }
  if (!row_fits(uint64_t{box[0]} * f.element_bytes, interleave, swizzle))
    return CUDA_ERROR_INVALID_VALUE;
  return keep(map, f);
}

CUresult CUDAAPI tensor_map_encode_im2col(
    CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
    const cuuint64_t* dims, const cuuint64_t* strides, const int* lower_corner,
    const int* upper_corner, cuuint32_t channels_per_pixel, cuuint32_t pixels_per_column,
    const cuuint32_t* element_strides, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
    CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  TensorMapFields f;
  if (map == nullptr || rank < 3 || rank > 5 ||
      !encode_tensor(f, type, rank, address, dims, strides, element_strides, interleave, swizzle))
    return CUDA_ERROR_INVALID_VALUE;
  if (channels_per_pixel == 0 || channels_per_pixel > 256 || pixels_per_column == 0 ||
      pixels_per_column > 1024)
    return CUDA_ERROR_INVALID_VALUE;
  const int bits = rank == 3 ? 16 : rank == 4 ? 8 : 5;  // the corners' signed width
  const int least = -(1 << (bits - 1)), most = (1 << (bits - 1)) - 1;
  for (uint32_t i = 0; i + 2 < rank; ++i) {
    if (lower_corner[i] < least || lower_corner[i] > most || upper_corner[i] < least ||
        upper_corner[i] > most)
      return CUDA_ERROR_INVALID_VALUE;
    // the box along spatial dimension i + 1: lower .. size - 1 + upper, not empty
    if (static_cast<int64_t>(dims[i + 1]) - 1 + upper_corner[i] < lower_corner[i])
      return CUDA_ERROR_INVALID_VALUE;
    f.lower[i] = static_cast<int16_t>(lower_corner[i]);
    f.upper[i] = static_cast<int16_t>(upper_corner[i]);
  }
  if (!row_fits(uint64_t{channels_per_pixel} * f.element_bytes, interleave, swizzle))
    return CUDA_ERROR_INVALID_VALUE;
  f.im2col = true;
  f.box[0] = static_cast<uint16_t>(channels_per_pixel);
  f.box[1] = static_cast<uint16_t>(pixels_per_column);
  return keep(map, f);
}

const TensorMapFields* tensor_map_fields(const CUtensorMap* map) {
  const auto* f = reinterpret_cast<const TensorMapFields*>(map);
  return f->magic == kTensorMapMagic ? f : nullptr;
}

}  // namespace cuda_emu
