// TF32 ("TensorFloat-32") rounding, callable from host and device code: the CPU reference
// (Precision::TF32, engine/ops.h) and the CUDA rounding kernel round the same way as the
// tensor-core convolution v3 (kernels/cuda/conv2d_tensor_core.cuh), which converts each
// operand with wmma::__float_to_tf32 (PTX cvt.rna.tf32.f32).
//
// TF32 keeps fp32's sign and 8-bit exponent and the top 10 of its 23 stored mantissa bits
// (11 significant bits): an fp32 bit pattern whose low 13 bits are zero. cvt.rna rounds to
// the nearest such value, ties away from zero (not to even, as bf16 does here): adding half
// of the dropped range, 0x1000, to the magnitude bits and truncating. Relative error at most
// 2^-11 = 4.9e-4 (the unit roundoff); a product of two TF32 values (22 significant bits) is
// exact in fp32, so an SGEMM on rounded operands gives a TF32 GEMM's numbers.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace ddpm {

DDPM_HD float round_to_tf32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return f;  // infinity and NaN pass unchanged
  u = (u + 0x1000u) & 0xffffe000u;  // on the magnitude (sign-magnitude): ties away from zero;
  std::memcpy(&f, &u, 4);           // the largest values round up to infinity
  return f;
}

}  // namespace ddpm
