// bfloat16 as raw bits, callable from host and device code: the CPU reference, the engine's
// bf16 dtype (engine/dtype.h) and the CUDA conversion kernels (kernels/cuda/conv2d_bf16.cu)
// round the same way, so a bf16 operand is the same bits on every path.
//
// bf16 is the top half of an IEEE float: sign, the 8-bit exponent (fp32's range) and 7
// stored mantissa bits, 8 significant bits with the implicit one. Rounding to nearest, ties
// to even, has a relative error of at most 2^-8 = 3.9e-3 (the unit roundoff; ~2.3e-3 rms),
// and the product of two bf16 values (8 significant bits each) is exact in fp32 (24), which
// is why tensor cores can multiply them exactly and accumulate in fp32.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace ddpm {

DDPM_HD uint16_t bf16_bits_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);  // nearest, ties to even
  return static_cast<uint16_t>((u + rounding) >> 16);    // overflow rounds to infinity
}

DDPM_HD float float_from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f rounded to the nearest bf16 value, as a float.
DDPM_HD float round_to_bf16(float f) {
  return float_from_bf16_bits(bf16_bits_from_float(f));
}

// An fp32 value as the exact sum of three bf16 values, for fp32 convolutions on bf16 tensor
// cores (kernels/cuda/conv2d_pieces.cu): hi = f rounded to bf16, mid = the remainder f - hi
// rounded, lo = what is left. Each remainder is exact in fp32, and rounding to nearest
// leaves at most 8 significant bits after two pieces (hi and mid each take 8 of f's 24, with
// a sign of their own), so lo is a bf16 value and f = hi + mid + lo with nothing lost:
// |mid| <= 2^-8 |f| and |lo| <= 2^-16 |f| (halves of an ulp). Where f's last bits fall below
// bf16's smallest subnormal, 2^-133 (|f| < 2^-110), lo drops them. A non-finite f is hi
// alone; a finite f that rounds up past bf16's largest value keeps hi truncated (its
// remainder is then of f's sign and |mid| < 2^-7 |f|; the sum is still exact).
struct Bf16Triple {
  uint16_t hi, mid, lo;
};
DDPM_HD Bf16Triple fp32_as_bf16_pieces(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return {bf16_bits_from_float(f), 0, 0};
  uint16_t hi = bf16_bits_from_float(f);
  if ((hi & 0x7f80u) == 0x7f80u) hi = static_cast<uint16_t>(u >> 16);
  const float mid_and_lo = f - float_from_bf16_bits(hi);
  const uint16_t mid = bf16_bits_from_float(mid_and_lo);
  return {hi, mid, bf16_bits_from_float(mid_and_lo - float_from_bf16_bits(mid))};
}

}  // namespace ddpm
