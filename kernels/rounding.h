// Correctly rounded float / double products and sums callable from host and device code.
// nvcc contracts a * b + c into one fma by default, the host build does not
// (-ffp-contract=off); code whose CPU and GPU results must be the same bits (the diffusion
// corruption and targets, per_sample_axpby) spells each operation with these instead.
#pragma once

#include "kernels/host_device.h"

namespace ddpm {

DDPM_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
DDPM_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
DDPM_HD double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
DDPM_HD double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace ddpm
