// e^x in float, written so that a loop of it vectorises (libm's expf is a call per element:
// it was 9% of the tiny U-Net's step, in softmax and SiLU).
//
// x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; ln2 split in two parts (Cody-Waite)
// so n ln2 is subtracted exactly; e^r by Cephes' expf polynomial (degree 7 with the leading
// 1 + r); 2^n put in the exponent bits. Relative error below 2e-7 (about 2 ulp) over the
// clamped range, checked against libm in tests/test_cpu_fast.cpp. Inputs are clamped to
// [-87.3, 88.3], where 2^n stays a normal float: below, the result is about 1e-38 instead of
// smaller (nothing in softmax or SiLU can tell), above, 2e38 instead of overflow.
#pragma once

#include <cstdint>
#include <cstring>

namespace ddpm::cpu_fast {

inline float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x;  // (not fmin/fmax: their NaN rules stop
                                                    // GCC vectorising; a NaN stays NaN here)
  // round(x / ln2) by adding and subtracting 1.5 * 2^23: the sum's last bit is the units
  // (not floor(), which GCC does not vectorise while floating-point traps are honoured)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 = 0.693359375 - 2.12e-4
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return er * scale;
}

}  // namespace ddpm::cpu_fast
