// Division of 31-bit unsigned integers by a divisor fixed before a kernel starts, by one
// multiply and one shift instead of a divide (which a GPU does not have: nvcc calls a
// subroutine, ~70 instructions for 64-bit operands, ~20 for 32-bit ones).
//
// Granlund and Montgomery, "Division by invariant integers using multiplication" (PLDI
// 1994), Theorem 4.2 with N = 31 bits: for a divisor d >= 1 let l = ceil(log2 d) and
// m = ceil(2^(31 + l) / d). Then m d - 2^(31 + l) < d <= 2^l, and that is all the theorem
// asks for floor(n / d) = floor(n m / 2^(31 + l)) to hold for every 0 <= n < 2^31. m is at
// most 2^32 - 1 for d < 2^31 (2^31 when d is a power of two), so n m fits in 64 bits.
// tests/test_fast_divide.cpp checks every n up to 2^17 and the edges of the range (0, d - 1,
// d, multiples, 2^31 - 1) for divisors 1 to 2^31 - 1.
//
// The convolutions v1-v3 (kernels/cuda/conv2d.cu) split a row or column of their implicit
// GEMM into (image, row, column) and (tap, channel) with these, where 64-bit divisions by
// the shape took most of their instructions.
#pragma once

#include <cstdint>

#include "engine/check.h"
#include "kernels/host_device.h"

namespace ddpm {

struct FastDivide {
  uint32_t divisor = 1;
  uint32_t multiplier = 1u << 31;  // m
  uint32_t shift = 31;             // 31 + l

  FastDivide() = default;  // divides by 1
  explicit FastDivide(int64_t d) {
    CHECK(d >= 1 && d < (int64_t{1} << 31),
          "FastDivide: divisor " << d << " is not in [1, 2^31)");
    uint32_t l = 0;
    while ((int64_t{1} << l) < d) ++l;
    divisor = static_cast<uint32_t>(d);
    shift = 31 + l;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << shift) + divisor - 1) / divisor);
  }

  // n / divisor for 0 <= n < 2^31.
  DDPM_HD uint32_t quotient(uint32_t n) const {
    return static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> shift);
  }
};

// n / d and n % d, n < 2^31.
struct QuotientRemainder {
  uint32_t q, r;
};
DDPM_HD QuotientRemainder divide(uint32_t n, const FastDivide& d) {
  const uint32_t q = d.quotient(n);
  return {q, n - q * d.divisor};
}

// A flat index n = (outer * M + middle) * I + inner split by its two inner extents I and M
// (a pixel's (image, row, column), a K index's (kh, kw, channel)); n < 2^31.
struct Split3 {
  uint32_t outer, middle, inner;
};
DDPM_HD Split3 split3(uint32_t n, const FastDivide& inner, const FastDivide& middle) {
  const QuotientRemainder i = divide(n, inner), m = divide(i.q, middle);
  return {m.q, m.r, i.r};
}

}  // namespace ddpm
