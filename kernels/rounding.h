// Correctly rounded products and sums (float or double) callable from host and device code.
// nvcc contracts a * b + c into one fma by default, the host build does not
// (-ffp-contract=off); code whose CPU and GPU results must be the same bits (the diffusion
// corruption and targets, per_sample_axpby) spells each operation with these instead.
#pragma once

#include <type_traits>

#include "kernels/host_device.h"

namespace ddpm {

// A value the compiler may not fuse with the operation it feeds. Under the CPU emulation
// the kernels are built with contraction on, as nvcc builds them (tests/cuda_emulation/
// CMakeLists.txt), so there a * b + c becomes one FMA unless the product passes through
// here; elsewhere on the host nothing contracts (-ffp-contract=off) and this is nothing.
template <class T>
inline T unfused(T v) {
#if DDPM_CUDA_EMULATION
  asm("" : "+m"(v));  // the value leaves through memory: no longer a product to fuse
#endif
  return v;
}

template <class T>
DDPM_HD T mul_rn(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return unfused(a * b);
#endif
}

template <class T>
DDPM_HD T add_rn(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
#else
  return unfused(a) + unfused(b);
#endif
}

}  // namespace ddpm
