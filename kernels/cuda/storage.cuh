// Element access for kernels templated on the storage of their tensors: fp32, or bf16 bits
// (kernels/bf16.h) read into fp32 and rounded to nearest even once when stored. The
// arithmetic between a load and a store is always fp32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/bf16.h"

namespace ddpm::cuda {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const uint16_t* p, int64_t i) {
  return float_from_bf16_bits(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(uint16_t* p, int64_t i, float v) {
  p[i] = bf16_bits_from_float(v);
}

// A gradient element from a backward kernel: p[i] += v (add), or p[i] = v when the kernel
// writes the first contribution outright (kernels/grad_write.h). One fp32 add, one rounding.
template <class T>
__device__ __forceinline__ void store_grad(T* p, int64_t i, float v, bool add) {
  store(p, i, add ? load(p, i) + v : v);
}

}  // namespace ddpm::cuda
