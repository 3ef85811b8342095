// Philox4x32-10, the counter-based generator of Salmon et al., "Parallel Random Numbers: As
// Easy as 1, 2, 3" (SC'11), callable from host and device code.
//
// A random value is a pure function of (seed, stream, index): no generator state is carried
// between calls, so the CPU and CUDA paths draw identical noise, a run is reproducible from
// its seed, and a fused kernel can regenerate the noise it needs instead of reading it back.
//
//   key     = (seed_lo, seed_hi)
//   counter = (block_lo, block_hi, stream_lo, stream_hi),   block = index / 4
// One Philox call yields four 32-bit words: elements 4*block .. 4*block+3 of the stream.
//
// Normals use Box-Muller on pairs of words. To make a normal draw bit-identical on CPU and
// GPU, log/sin/cos are computed here with only IEEE-exact operations (+, -, *, /, sqrt and
// explicit fmaf, all correctly rounded on both sides) instead of libm/CUDA intrinsics, which
// differ by an ulp or two. Accuracy is about 2 ulp (tests/test_philox.cpp measures it).
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace ddpm {

struct Philox4 {
  uint32_t v[4];
};

// The high and low words of the 64-bit product a * b. On the GPU __umulhi and a 32-bit
// multiply, which ptxas fuses into one IMAD.WIDE.U32; the 64-bit product written out, as on
// the host, compiles there to the same instruction plus an add of zero to each high word
// (sm_90 SASS of a kernel drawing one Philox block a thread: 95 instructions against 73).
DDPM_HD uint32_t mul_hi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

DDPM_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;   // round multipliers
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mul_hi(kMul0, ctr.v[0]), lo0 = kMul0 * ctr.v[0];
    const uint32_t hi1 = mul_hi(kMul1, ctr.v[2]), lo1 = kMul1 * ctr.v[2];
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return ctr;
}

// The four words of block `block` of stream `stream` under `seed`.
DDPM_HD Philox4 philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  return philox4x32_10(Philox4{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// ---- uniform ----

// A word to a float in [0, 1): the top 24 bits times 2^-24 (exact).
DDPM_HD float word_to_uniform(uint32_t w) { return static_cast<float>(w >> 8) * 0x1p-24f; }

DDPM_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  const Philox4 b = philox_block(seed, stream, index >> 2);
  return word_to_uniform(b.v[index & 3]);
}

// ---- portable log and sincos (see the file comment) ----

DDPM_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

DDPM_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Natural log of a positive, normal float. x = 2^e * m with m in [sqrt(1/2), sqrt(2)); then
// log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1), |s| <= 0.172, and the
// series to s^13 is exact to float precision.
DDPM_HD float portable_logf(float x) {
  const uint32_t bits = float_to_bits(x);
  int e = static_cast<int>((bits >> 23) & 0xFF) - 127;
  float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m = m * 0.5f;  // exact
    e += 1;
  }
  const float s = (m - 1.0f) / (m + 1.0f);
  const float z = s * s;
  float p = fmaf(z, 2.0f / 13.0f, 2.0f / 11.0f);
  p = fmaf(z, p, 2.0f / 9.0f);
  p = fmaf(z, p, 2.0f / 7.0f);
  p = fmaf(z, p, 2.0f / 5.0f);
  p = fmaf(z, p, 2.0f / 3.0f);
  const float log_m = fmaf(s * z, p, 2.0f * s);
  // e * ln2 in two parts: ln2_hi has 16 significant bits, so e * ln2_hi is exact.
  constexpr float kLn2Hi = 0.693145752f, kLn2Lo = 1.42860677e-6f;
  return fmaf(static_cast<float>(e), kLn2Hi, fmaf(static_cast<float>(e), kLn2Lo, log_m));
}

// sin and cos of 2*pi*j/2^24 for an integer j in [0, 2^24). The reduction is exact integer
// arithmetic: quadrant q = round(j / 2^22), remainder r = j - q 2^22 in [-2^21, 2^21), so
// the angle left is r * 2pi/2^24 in [-pi/4, pi/4], where Taylor series to x^11 / x^12 are
// exact to float precision.
DDPM_HD void portable_sincos_turns(uint32_t j, float* sin_out, float* cos_out) {
  const uint32_t q = (j + (1u << 21)) >> 22;  // 0..4
  const int32_t r = static_cast<int32_t>(j) - static_cast<int32_t>(q << 22);
  const float x = static_cast<float>(r) * 3.74507039e-7f;  // 2*pi / 2^24
  const float x2 = x * x;
  float ps = fmaf(x2, -2.50521084e-8f, 2.75573192e-6f);
  ps = fmaf(x2, ps, -1.98412698e-4f);
  ps = fmaf(x2, ps, 8.33333333e-3f);
  ps = fmaf(x2, ps, -1.66666667e-1f);
  const float s = fmaf(x * x2, ps, x);
  float pc = fmaf(x2, 2.08767570e-9f, -2.75573192e-7f);
  pc = fmaf(x2, pc, 2.48015873e-5f);
  pc = fmaf(x2, pc, -1.38888889e-3f);
  pc = fmaf(x2, pc, 4.16666667e-2f);
  pc = fmaf(x2, pc, -0.5f);
  const float c = fmaf(x2, pc, 1.0f);
  // Rotate by q quarter turns, (s, c) to (s, c), (c, -s), (-s, -c), (-c, s), by selects and
  // sign flips (exact), not a switch: a warp's lanes draw angles in every quadrant, and on a
  // GPU a switch runs each of its cases in turn.
  const bool odd = (q & 1) != 0;
  const float sin_q = odd ? c : s, cos_q = odd ? s : c;
  *sin_out = (q & 2) != 0 ? -sin_q : sin_q;
  *cos_out = ((q + 1) & 2) != 0 ? -cos_q : cos_q;
}

// ---- normal ----

struct Normal4 {
  float v[4];
};

// Four standard normals from one block: Box-Muller on words (0, 1) and (2, 3).
// u1 = (w >> 8 + 1) 2^-24 is in (0, 1], so log(u1) is finite.
DDPM_HD Normal4 philox_normal4(uint64_t seed, uint64_t stream, uint64_t block) {
  const Philox4 b = philox_block(seed, stream, block);
  Normal4 out;
  for (int pair = 0; pair < 2; ++pair) {
    const float u1 = static_cast<float>((b.v[2 * pair] >> 8) + 1u) * 0x1p-24f;
    const float radius = sqrtf(-2.0f * portable_logf(u1));
    float s, c;
    portable_sincos_turns(b.v[2 * pair + 1] >> 8, &s, &c);
    out.v[2 * pair] = radius * c;
    out.v[2 * pair + 1] = radius * s;
  }
  return out;
}

// Element `index` of the standard-normal stream (seed, stream).
DDPM_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox_normal4(seed, stream, index >> 2).v[index & 3];
}

}  // namespace ddpm
