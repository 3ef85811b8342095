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

// A TF32 value as the exact sum of two bf16 values (bits, kernels/bf16.h), for the TF32
// convolution on bf16 tensor cores (kernels/cuda/conv2d_tf32.cu): hi is t's top 16
// bits (sign, exponent and 7 of its 10 mantissa bits), lo = t - hi, which is exact in fp32
// and has at most 3 significant bits (t's last 3 mantissa bits), so it is a bf16 value too:
// t = hi + lo with nothing lost, and a product of two TF32 values is the sum of the four
// products of their pieces, each exact in fp32. Where t's low bits fall below fp32's normal
// range (|t| < 2^-123) lo's last bits are dropped; a non-finite t is hi alone (lo 0, not
// NaN, so that infinity stays infinity).
struct Bf16Pieces {
  uint16_t hi, lo;
};
DDPM_HD Bf16Pieces tf32_as_bf16_pieces(float f) {
  const float t = round_to_tf32(f);
  uint32_t u;
  std::memcpy(&u, &t, 4);
  const uint32_t hi_bits = u & 0xffff0000u;
  if ((u & 0x7f800000u) == 0x7f800000u) return {static_cast<uint16_t>(hi_bits >> 16), 0};
  float hi;
  std::memcpy(&hi, &hi_bits, 4);
  const float lo = t - hi;
  uint32_t lo_bits;
  std::memcpy(&lo_bits, &lo, 4);
  return {static_cast<uint16_t>(hi_bits >> 16), static_cast<uint16_t>(lo_bits >> 16)};
}

}  // namespace ddpm
