// The CUDA device language, emulated in host C++: what a kernel file in kernels/cuda/ uses
// when it is compiled by g++ instead of nvcc (tests/cuda_emulation/README.md has the design).
//
//   qualifiers      __global__, __device__, __host__, __forceinline__ vanish; __shared__
//                   becomes `static`: one instance per kernel, shared by the block's host
//                   threads (blocks run one at a time, so one instance is enough)
//   indices         threadIdx, blockIdx, blockDim, gridDim are thread_local: each host thread
//                   is one CUDA thread of the running block
//   barriers        __syncthreads() is a real barrier over the block's threads, and checks
//                   that they all reach the same one (block.cpp); __syncwarp and the warp
//                   shuffles/votes are barriers over the warp's 32 threads
//   atomics         GCC __atomic builtins (relaxed, like CUDA's atomics)
//   math            the host's libm, plus the CUDA names the host lacks (rsqrtf, __fmul_rn)
// Vector types follow CUDA's sizes and alignments, so a misaligned float4 access is still
// undefined behaviour that UBSan reports.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/rounding.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__

// ---- vector types and indices -------------------------------------------------------------

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) {
  return {x, y};
}
inline float4 make_float4(float x, float y, float z, float w) {
  return {x, y, z, w};
}
inline int4 make_int4(int x, int y, int z, int w) {
  return {x, y, z, w};
}
inline uint2 make_uint2(unsigned x, unsigned y) {
  return {x, y};
}
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}

// Defined here (inline variables, constant-initialised): every file reads them directly.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---- block and warp synchronisation (tests/cuda_emulation/block.cpp) ----------------------

namespace cuda_emu {

void syncthreads(const char* file, int line);
void syncwarp(unsigned mask);
// Every active lane of the warp passes `mine`; returns what lane `source` passed (the caller
// has worked out the source lane by the shuffle's rule). `op` names the intrinsic, so lanes
// meeting in different intrinsics are reported.
uint64_t warp_shuffle(const char* op, unsigned mask, uint64_t mine, int source);
// A bit per active lane whose `predicate` is true (__ballot_sync).
unsigned warp_ballot(unsigned mask, bool predicate);
// Lanes of the calling thread's warp that have not exited.
unsigned warp_active_mask();
// The calling thread's lane (0..31).
int lane_id();
// Kernel traps: ends the block (the launch then fails with `message`, like a device trap).
[[noreturn]] void trap(const char* message);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <class T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
// First lane of the calling lane's `width`-wide segment.
inline int segment_base(int width) {
  return lane_id() & ~(width - 1);
}

}  // namespace cuda_emu

#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::cuda_emu::syncwarp(mask);
}
inline unsigned __activemask() {
  return ::cuda_emu::warp_active_mask();
}

// Shuffles with CUDA's rules for width < 32: a lane reads within its segment; a source
// beyond the segment (down, xor) or before it (up) gives the lane its own value.
template <class T>
T __shfl_sync(unsigned mask, T v, int source_lane, int width = warpSize) {
  const int source = cuda_emu::segment_base(width) + (source_lane & (width - 1));
  return cuda_emu::from_bits<T>(
      cuda_emu::warp_shuffle("__shfl_sync", mask, cuda_emu::to_bits(v), source));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int lane = cuda_emu::lane_id(), source = lane ^ lane_mask;
  const int stay = source >= cuda_emu::segment_base(width) + width ? lane : source;
  return cuda_emu::from_bits<T>(
      cuda_emu::warp_shuffle("__shfl_xor_sync", mask, cuda_emu::to_bits(v), stay));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = cuda_emu::lane_id(), source = lane + static_cast<int>(delta);
  const int stay = source >= cuda_emu::segment_base(width) + width ? lane : source;
  return cuda_emu::from_bits<T>(
      cuda_emu::warp_shuffle("__shfl_down_sync", mask, cuda_emu::to_bits(v), stay));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = cuda_emu::lane_id(), source = lane - static_cast<int>(delta);
  const int stay = source < cuda_emu::segment_base(width) ? lane : source;
  return cuda_emu::from_bits<T>(
      cuda_emu::warp_shuffle("__shfl_up_sync", mask, cuda_emu::to_bits(v), stay));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return cuda_emu::warp_ballot(mask, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) {
  return cuda_emu::warp_ballot(mask, predicate != 0) != 0;
}
inline int __all_sync(unsigned mask, int predicate) {
  return cuda_emu::warp_ballot(mask, predicate != 0) == (mask & cuda_emu::warp_active_mask());
}

// ---- atomics: relaxed read-modify-write, as CUDA's ---------------------------------------

template <class T>
T atomicAdd(T* address, T v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(address, v, __ATOMIC_RELAXED);
  } else {  // float, double: compare-and-swap on the bits
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    Bits* bits = reinterpret_cast<Bits*>(address);
    Bits old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    T old_value;
    for (;;) {
      std::memcpy(&old_value, &old, sizeof(T));
      const T sum = old_value + v;
      Bits next;
      std::memcpy(&next, &sum, sizeof(T));
      if (__atomic_compare_exchange_n(bits, &old, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return old_value;
    }
  }
}
template <class T>
T atomicSub(T* address, T v) {
  static_assert(std::is_integral_v<T>, "atomicSub is for integers");
  return __atomic_fetch_sub(address, v, __ATOMIC_RELAXED);
}
template <class T>
T atomicExch(T* address, T v) {
  return __atomic_exchange_n(address, v, __ATOMIC_RELAXED);
}
template <class T>
T atomicCAS(T* address, T compare, T v) {
  __atomic_compare_exchange_n(address, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;  // the old value, whether or not the swap happened
}
template <class T>
T atomicMax(T* address, T v) {
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(address, &old, v, false, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
T atomicMin(T* address, T v) {
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(address, &old, v, false, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
  }
  return old;
}

// ---- math the host library lacks --------------------------------------------------------

inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
// The GPU's __expf and __fdividef are approximations (ex2.approx, rcp.approx) within a few
// ulp, which the emulation does not reproduce bit for bit: it gives the exact value rounded,
// so a test may not hold either to the emulation's bits. It does keep __fdividef's one
// departure from a division larger than a few ulp: a divisor past 2^126 in size gives a
// zero (its approximate reciprocal is flushed), an infinite dividend then a NaN.
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __fdividef(float a, float b) {
  const float size = std::fabs(b);
  if (size > 0x1p126f && size <= std::numeric_limits<float>::max())
    return a * std::copysign(0.0f, b);
  return a / b;
}
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}
// Correctly rounded single operations, which nvcc never fuses into an FMA. The emulated
// kernels are built with contraction on where the CPU has FMA instructions, as nvcc builds
// them (CMakeLists.txt here): the operands and products pass through ddpm::unfused
// (kernels/rounding.h), so these stay one rounding each.
inline float __fmul_rn(float a, float b) {
  return ddpm::unfused(a * b);
}
inline float __fadd_rn(float a, float b) {
  return ddpm::unfused(a) + ddpm::unfused(b);
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline double __dmul_rn(double a, double b) {
  return ddpm::unfused(a * b);
}
inline double __dadd_rn(double a, double b) {
  return ddpm::unfused(a) + ddpm::unfused(b);
}
inline unsigned __float_as_uint(float f) {
  return cuda_emu::from_bits<unsigned>(cuda_emu::to_bits(f));
}
inline float __uint_as_float(unsigned u) {
  return cuda_emu::from_bits<float>(u);
}
inline int __float_as_int(float f) {
  return cuda_emu::from_bits<int>(cuda_emu::to_bits(f));
}
inline float __int_as_float(int i) {
  return cuda_emu::from_bits<float>(static_cast<uint32_t>(i));
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
