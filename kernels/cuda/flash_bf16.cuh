// What the bf16 flash-attention kernels share (attention_flash_bf16.cu, the forward;
// attention_flash_bf16_backward.cu): bf16 pairs for mma operands, the staging of f32 rows
// (or bf16 rows, for bf16 activations) of the packed qkv (or dout) into padded bf16 rows of
// shared memory, and the store of output pairs in either storage.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/cuda/launch.cuh"

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

// Rows [0, rows) of a tile from global f32 (row r at src + r * stride, D floats, 16-byte
// aligned) into shared bf16 rows of D + kPad; rows [rows, tile_rows) zero. float4 loads: a
// warp reads 512 contiguous bytes of a row. All threads of the block take part.
template <int D>
__device__ void stage_rows(uint16_t* dst, int tile_rows, const float* src, int64_t stride,
                           int rows) {
  constexpr int kQuads = D / 4;
  for (int e = threadIdx.x; e < tile_rows * kQuads; e += blockDim.x) {
    const int r = e / kQuads, c = 4 * (e % kQuads);
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r < rows) v = *reinterpret_cast<const float4*>(src + r * stride + c);
    uint32_t* d = reinterpret_cast<uint32_t*>(dst + r * (D + kPad) + c);
    d[0] = pack_bf16(v.x, v.y);
    d[1] = pack_bf16(v.z, v.w);
  }
}

// The same from global bf16 (bf16 activations: the bits are copied, nothing is rounded);
// rows 8-byte aligned, 4 bf16 per load.
template <int D>
__device__ void stage_rows(uint16_t* dst, int tile_rows, const uint16_t* src, int64_t stride,
                           int rows) {
  constexpr int kQuads = D / 4;
  for (int e = threadIdx.x; e < tile_rows * kQuads; e += blockDim.x) {
    const int r = e / kQuads, c = 4 * (e % kQuads);
    uint2 v = make_uint2(0u, 0u);
    if (r < rows) v = *reinterpret_cast<const uint2*>(src + r * stride + c);
    *reinterpret_cast<uint2*>(dst + r * (D + kPad) + c) = v;
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
