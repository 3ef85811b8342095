// What the bf16 flash-attention kernels share (attention_flash_bf16.cu, the forward;
// attention_flash_bf16_backward.cu): bf16 pairs for mma operands, the staging of f32 rows
// (or bf16 rows, for bf16 activations) of the packed qkv (or dout) into padded bf16 rows of
// shared memory, and the store of output pairs in either storage.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

namespace ddpm::cuda::flash {

// Shared-memory rows are D + 8 bf16: 16 bytes of padding put the 8 rows an ldmatrix 8x8
// matrix reads into 8 different 16-byte bank groups.
constexpr int kPad = 8;

// Two floats as a bf16 pair in one register, the lower element first (mma's operand order),
// each rounded to nearest even (kernels/bf16.h, the CPU's rounding).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(bf16_bits_from_float(lo)) |
         (static_cast<uint32_t>(bf16_bits_from_float(hi)) << 16);
}

// Four consecutive elements of global memory as two bf16 pairs: f32 (a float4 load,
// rounded) or bf16 bits (an 8-byte load, copied).
__device__ __forceinline__ uint2 load4_bf16(const float* p) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  return make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
}
__device__ __forceinline__ uint2 load4_bf16(const uint16_t* p) {
  return *reinterpret_cast<const uint2*>(p);
}

// Rows [0, rows) of a tile from global memory (row r at src + r * stride, D elements, f32
// 16-byte aligned or bf16 8-byte aligned) into shared bf16 rows of D + kPad; rows
// [rows, tile_rows) zero. A warp reads 512 (f32) or 256 (bf16) contiguous bytes of a row.
// All threads of the block take part.
template <int D, class A>
__device__ void stage_rows(uint16_t* dst, int tile_rows, const A* src, int64_t stride, int rows) {
  constexpr int kQuads = D / 4;
  for (int e = threadIdx.x; e < tile_rows * kQuads; e += blockDim.x) {
    const int r = e / kQuads, c = 4 * (e % kQuads);
    const uint2 v = r < rows ? load4_bf16(src + r * stride + c) : make_uint2(0u, 0u);
    *reinterpret_cast<uint2*>(dst + r * (D + kPad) + c) = v;
  }
}

// The same rows of bf16 by cp.async (16 bytes, 8 bf16, per copy; rows past `rows` zero-
// filled by the copy itself): no registers, no wait here. The caller commits the group and
// waits for it (ptx.cuh); rows 16-byte aligned in global and shared memory.
template <int D>
__device__ void copy_rows(uint16_t* dst, int tile_rows, const uint16_t* src, int64_t stride,
                          int rows) {
  constexpr int kChunks = D / 8;
  for (int e = threadIdx.x; e < tile_rows * kChunks; e += blockDim.x) {
    const int r = e / kChunks, c = 8 * (e % kChunks);
    const bool valid = r < rows;
    ptx::cp_async_16(dst + r * (D + kPad) + c, valid ? src + r * stride + c : src, valid);
  }
}

// Two adjacent outputs stored: a float2, or a bf16 pair (each rounded once) in 4 bytes.
__device__ __forceinline__ void store_pair(float* dst, float a, float b) {
  *reinterpret_cast<float2*>(dst) = make_float2(a, b);
}
__device__ __forceinline__ void store_pair(uint16_t* dst, float a, float b) {
  *reinterpret_cast<uint32_t*>(dst) = pack_bf16(a, b);
}

}  // namespace ddpm::cuda::flash
