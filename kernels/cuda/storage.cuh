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
// v rounded to the nearest bf16 (ties to even), as bits: one cvt on sm_80+, kernels/bf16.h's
// integer rounding elsewhere; the same bits for every finite or infinite value (a NaN stays
// a NaN, its payload may differ). bf16_pair below does two at once.
__device__ __forceinline__ uint16_t bf16_round(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint16_t bits;
  asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(bits) : "f"(v));
  return bits;
#else
  return bf16_bits_from_float(v);
#endif
}

// v as storage T holds it: v (fp32), or v rounded to bf16 and read back (bf16 bits).
template <class T>
__device__ __forceinline__ float as_stored(float v) {
  if constexpr (sizeof(T) == 2)
    return float_from_bf16_bits(bf16_round(v));
  else
    return v;
}

__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(uint16_t* p, int64_t i, float v) { p[i] = bf16_round(v); }

// A gradient element from a backward kernel: p[i] += v (add), or p[i] = v when the kernel
// writes the first contribution outright (kernels/grad_write.h). One fp32 add, one rounding.
template <class T>
__device__ __forceinline__ void store_grad(T* p, int64_t i, float v, bool add) {
  store(p, i, add ? load(p, i) + v : v);
}

// ---- pairs of adjacent elements ----------------------------------------------------------
// Two floats as a bf16 pair in one 32-bit word, the lower element in the lower half (memory
// order, and mma's operand order), each rounded to nearest even. On sm_80+ one instruction
// does both (cvt.rn.bf16x2.f32, which packs its first source into the upper half), where
// kernels/bf16.h's rounding in integer arithmetic, the CPU's and the emulation's, takes five
// or so per element; the two give the same bits for every finite or infinite value (a NaN
// stays a NaN, its payload may differ).
__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t pair;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(pair) : "f"(hi), "f"(lo));
  return pair;
#else
  return static_cast<uint32_t>(bf16_round(lo)) | (static_cast<uint32_t>(bf16_round(hi)) << 16);
#endif
}

// Elements i and i + 1 of a row as one access: an 8-byte float2 (fp32) or a 4-byte pair of
// bf16 (the lower element in the lower half). Half the memory instructions of two scalar
// accesses; the caller guarantees the alignment: i even and p aligned to two elements.
__device__ __forceinline__ void load_pair(const float* p, int64_t i, float (&v)[2]) {
  const float2 q = *reinterpret_cast<const float2*>(p + i);
  v[0] = q.x;
  v[1] = q.y;
}
// The two bf16 of a 32-bit word (the lower element in the lower half) into lo, hi.
__device__ __forceinline__ void unpack_bf16_pair(uint32_t q, float& lo, float& hi) {
  lo = float_from_bf16_bits(static_cast<uint16_t>(q & 0xffffu));
  hi = float_from_bf16_bits(static_cast<uint16_t>(q >> 16));
}
__device__ __forceinline__ void load_pair(const uint16_t* p, int64_t i, float (&v)[2]) {
  unpack_bf16_pair(*reinterpret_cast<const uint32_t*>(p + i), v[0], v[1]);
}
__device__ __forceinline__ void store_pair(float* p, int64_t i, const float (&v)[2]) {
  *reinterpret_cast<float2*>(p + i) = make_float2(v[0], v[1]);
}
__device__ __forceinline__ void store_pair(uint16_t* p, int64_t i, const float (&v)[2]) {
  *reinterpret_cast<uint32_t*>(p + i) = bf16_pair(v[0], v[1]);
}

// Columns col and col + 1 of a row starting at p, the second only when count is 2 (count 1:
// col is the row's last column, and v[1] is neither read nor written). One paired access
// when `paired` (col even, rows_pair() of the row length and base), else one per element.
template <class T>
__device__ __forceinline__ void load_cols(const T* p, int64_t col, int count, bool paired,
                                          float (&v)[2]) {
  if (paired && count == 2) {
    load_pair(p, col, v);
  } else {
    v[0] = load(p, col);
    v[1] = count == 2 ? load(p, col + 1) : 0.0f;
  }
}
template <class T>
__device__ __forceinline__ void store_cols(T* p, int64_t col, int count, bool paired,
                                           const float (&v)[2]) {
  if (paired && count == 2) {
    store_pair(p, col, v);
  } else {
    store(p, col, v[0]);
    if (count == 2) store(p, col + 1, v[1]);
  }
}

// A kernel that walks an (m, n) matrix a pair of adjacent columns at a time (m * pairs(n)
// threads' worth): pair i is columns col, col + 1 of row `row`, the second only when count
// is 2. One division per pair finds the row.
struct ColumnPair {
  __host__ __device__ static int64_t pairs(int64_t n) { return (n + 1) / 2; }
  int64_t row, col;
  int count;
  __device__ ColumnPair(int64_t i, int64_t n) {
    const int64_t per_row = pairs(n);
    row = i / per_row;
    col = 2 * (i - row * per_row);
    count = col + 1 < n ? 2 : 1;
  }
};

// ---- runs of kRun adjacent elements ----------------------------------------------------
// Elements i .. i + kRun - 1 as one access each 16 bytes: kRun = 8 is one 16-byte word of
// bf16 or two of fp32 (LDG.128 / STG.128 in SASS, where a scalar access moves 2 or 4 bytes:
// an eighth or a quarter of the memory instructions for the same bytes); kRun = 1 is load /
// store. The caller guarantees i a multiple of kRun and p 16-byte aligned (rows_run below, on
// the host); the emulation traps otherwise, as a GPU faults on a misaligned word.
constexpr int kRun = 8;

__device__ __forceinline__ void check_word_aligned(const void* p) {
#if DDPM_CUDA_EMULATION
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) cuda_emu::trap("16-byte access not aligned");
#else
  (void)p;
#endif
}

// A run as storage T holds it, kept in registers between its load and its use: two float4
// words (fp32), or one 16-byte word of 8 bf16 (half the registers of its floats; a kernel
// that keeps many runs, kernels/cuda/group_norm_resident.cu, keeps them so). unpack_run
// gives the floats.
template <class T>
struct StoredRun;
template <>
struct StoredRun<float> {
  float4 w[kRun / 4];
};
template <>
struct StoredRun<uint16_t> {
  uint4 w;
};

template <class T>
__device__ __forceinline__ StoredRun<T> load_stored_run(const T* p, int64_t i) {
  check_word_aligned(p + i);
  StoredRun<T> r;
  if constexpr (sizeof(T) == 2) {
    r.w = *reinterpret_cast<const uint4*>(p + i);
  } else {
#pragma unroll
    for (int w = 0; w < kRun / 4; ++w) r.w[w] = reinterpret_cast<const float4*>(p + i)[w];
  }
  return r;
}
__device__ __forceinline__ void unpack_run(const StoredRun<float>& r, float (&v)[kRun]) {
#pragma unroll
  for (int w = 0; w < kRun / 4; ++w) {
    v[4 * w] = r.w[w].x;
    v[4 * w + 1] = r.w[w].y;
    v[4 * w + 2] = r.w[w].z;
    v[4 * w + 3] = r.w[w].w;
  }
}
__device__ __forceinline__ void unpack_run(const StoredRun<uint16_t>& r, float (&v)[kRun]) {
  const uint32_t pairs[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) unpack_bf16_pair(pairs[k], v[2 * k], v[2 * k + 1]);
}

template <int kN, class T>
__device__ __forceinline__ void load_run(const T* p, int64_t i, float (&v)[kN]) {
  if constexpr (kN == 1) {
    v[0] = load(p, i);
  } else {
    static_assert(kN == kRun, "runs of 1 or kRun elements");
    unpack_run(load_stored_run(p, i), v);
  }
}
// floats as storage T holds them: for bf16, each rounded to nearest even (bf16_pair)
__device__ __forceinline__ void pack_run(const float (&v)[kRun], StoredRun<float>& r) {
#pragma unroll
  for (int w = 0; w < kRun / 4; ++w)
    r.w[w] = make_float4(v[4 * w], v[4 * w + 1], v[4 * w + 2], v[4 * w + 3]);
}
__device__ __forceinline__ void pack_run(const float (&v)[kRun], StoredRun<uint16_t>& r) {
  r.w = make_uint4(bf16_pair(v[0], v[1]), bf16_pair(v[2], v[3]), bf16_pair(v[4], v[5]),
                   bf16_pair(v[6], v[7]));
}
template <class T>
__device__ __forceinline__ void store_stored_run(T* p, int64_t i, const StoredRun<T>& r) {
  check_word_aligned(p + i);
  if constexpr (sizeof(T) == 2) {
    *reinterpret_cast<uint4*>(p + i) = r.w;
  } else {
#pragma unroll
    for (int w = 0; w < kRun / 4; ++w) reinterpret_cast<float4*>(p + i)[w] = r.w[w];
  }
}

template <int kN, class T>
__device__ __forceinline__ void store_run(T* p, int64_t i, const float (&v)[kN]) {
  if constexpr (kN == 1) {
    store(p, i, v[0]);
  } else {
    static_assert(kN == kRun, "runs of 1 or kRun elements");
    StoredRun<T> r;
    pack_run(v, r);
    store_stored_run(p, i, r);
  }
}

// Host side: whether rows of `ld` elements from `base` (null: absent, no constraint) let any
// k consecutive elements starting at a multiple of k move as one k-element word: ld a
// multiple of k and base aligned to k elements. k = 2: load_cols / store_cols's pairs.
template <class T>
inline bool rows_align(int64_t ld, const T* base, int64_t k) {
  return ld % k == 0 && reinterpret_cast<uintptr_t>(base) % (k * sizeof(T)) == 0;
}
template <class T>
inline bool rows_pair(int64_t ld, const T* base) {
  return rows_align(ld, base, 2);
}
// Whether load_run / store_run of kRun elements may walk rows of `ld` elements from `base`:
// every run starting at a multiple of kRun then starts on a 16-byte boundary.
template <class T>
inline bool rows_run(int64_t ld, const T* base) {
  return ld % kRun == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

}  // namespace ddpm::cuda
