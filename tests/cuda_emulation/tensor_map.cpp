// The emulated cuTensorMapEncodeTiled (tensor_map.h): the driver's rules, then the arguments
// kept in the map's opaque bytes.
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

}  // namespace

CUresult CUDAAPI tensor_map_encode_tiled(CUtensorMap* map, CUtensorMapDataType type,
                                         cuuint32_t rank, void* address, const cuuint64_t* dims,
                                         const cuuint64_t* strides, const cuuint32_t* box,
                                         const cuuint32_t* element_strides,
                                         CUtensorMapInterleave interleave,
                                         CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
                                         CUtensorMapFloatOOBfill) {
  const uint32_t bytes = element_bytes(type);
  if (map == nullptr || bytes == 0 || rank < 1 || rank > 5 || address == nullptr ||
      reinterpret_cast<uintptr_t>(address) % 16 != 0)
    return CUDA_ERROR_INVALID_VALUE;
  TensorMapFields f{};
  f.magic = kTensorMapMagic;
  f.address = static_cast<const unsigned char*>(address);
  f.rank = rank;
  f.element_bytes = bytes;
  f.swizzle = swizzle;
  f.interleave = interleave;
  for (uint32_t i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t{1} << 32)) return CUDA_ERROR_INVALID_VALUE;
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    if (element_strides[i] == 0 || element_strides[i] > 8) return CUDA_ERROR_INVALID_VALUE;
    f.dims[i] = dims[i];
    f.box[i] = static_cast<uint16_t>(box[i]);
    f.element_strides[i] = static_cast<uint8_t>(element_strides[i]);
    if (i > 0) {  // globalStrides[i - 1]: a multiple of 16 under 2^40
      if (strides[i - 1] % 16 != 0 || strides[i - 1] >= (uint64_t{1} << 40))
        return CUDA_ERROR_INVALID_VALUE;
      f.strides[i - 1] = strides[i - 1];
    }
  }
  const uint64_t row_bytes = uint64_t{box[0]} * bytes;
  if (interleave == CU_TENSOR_MAP_INTERLEAVE_NONE) {
    if (row_bytes % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
    const uint32_t span = swizzle_span(swizzle);
    if (span != 0 && row_bytes > span) return CUDA_ERROR_INVALID_VALUE;
  }
  std::memset(map, 0, sizeof *map);
  std::memcpy(map, &f, sizeof f);
  return CUDA_SUCCESS;
}

const TensorMapFields* tensor_map_fields(const CUtensorMap* map) {
  const auto* f = reinterpret_cast<const TensorMapFields*>(map);
  return f->magic == kTensorMapMagic ? f : nullptr;
}

}  // namespace cuda_emu
