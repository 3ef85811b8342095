// Philox4x32-10: the published known-answer vectors, the (seed, stream, index) mapping, the
// accuracy of the portable log/sincos, and the statistics of the normal and uniform draws.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "engine/ops.h"
#include "engine/philox.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

// Random123's known-answer vectors for philox4x32_10 (its kat_vectors file).
TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 expected;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    const Philox4 out = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], k.expected.v[i]) << "word " << i;
  }
}

TEST(Philox, CounterLayout) {
  // block = index / 4 in counter words 0-1, stream in words 2-3, seed as the key.
  const uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull, block = 0x1122334455ull;
  const Philox4 direct = philox4x32_10(
      Philox4{{0x22334455u, 0x11u, 0x76543210u, 0xfedcba98u}}, 0x89abcdefu, 0x01234567u);
  const Philox4 mapped = philox_block(seed, stream, block);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(direct.v[i], mapped.v[i]);
  EXPECT_EQ(philox_uniform(seed, stream, block * 4 + 2), word_to_uniform(direct.v[2]));
}

// Distance in units in the last place between two floats of the same sign.
int64_t ulp_distance(float a, float b) {
  return std::llabs(static_cast<int64_t>(float_to_bits(a)) - static_cast<int64_t>(float_to_bits(b)));
}

TEST(Philox, PortableLogIsAccurate) {
  // Every input Box-Muller can see is k * 2^-24, k = 1..2^24; check a dense sweep of them
  // against double-precision log rounded to float. Measured worst case: 1 ulp, except near
  // u = 1 where log(u) -> 0 and we allow 1e-7 absolute (the radius sqrt(-2 log u) is then
  // ~1e-3 and its relative error stays below 1e-4).
  int64_t worst = 0;
  for (uint32_t k = 1; k <= (1u << 24); k += 997) {
    const float u = static_cast<float>(k) * 0x1p-24f;
    const float ref = static_cast<float>(std::log(static_cast<double>(u)));
    const float got = portable_logf(u);
    if (std::fabs(ref) > 1e-3f) {
      worst = std::max(worst, ulp_distance(got, ref));
    } else {
      EXPECT_NEAR(got, ref, 1e-7f) << "u = " << u;
    }
  }
  EXPECT_LE(worst, 2) << "portable_logf is more than 2 ulp from log";
}

TEST(Philox, PortableSinCosIsAccurate) {
  double worst = 0;
  for (uint32_t j = 0; j < (1u << 24); j += 331) {
    float s, c;
    portable_sincos_turns(j, &s, &c);
    const double angle = 2.0 * M_PI * static_cast<double>(j) / 16777216.0;
    worst = std::max(worst, std::fabs(s - std::sin(angle)));
    worst = std::max(worst, std::fabs(c - std::cos(angle)));
  }
  // float has 2^-24 ~ 6e-8 relative precision; |sin| <= 1, so 2.5e-7 is a few ulp at 1.
  EXPECT_LT(worst, 2.5e-7);
}

TEST(Philox, NormalStatistics) {
  const int64_t n = 1 << 20;
  const std::vector<float> x = randn(Shape{n}, 42, 7).to_vector<float>();
  double m1 = 0, m2 = 0, m4 = 0;
  for (float v : x) {
    ASSERT_TRUE(std::isfinite(v));
    m1 += v;
    m2 += double(v) * v;
    m4 += double(v) * v * v * v;
  }
  m1 /= n;
  m2 /= n;
  m4 /= n;
  // Standard errors for n = 2^20: mean 1/sqrt(n) ~ 1e-3, variance sqrt(2/n) ~ 1.4e-3,
  // fourth moment sqrt(96/n) ~ 9.6e-3. Bounds at 5 standard errors.
  EXPECT_NEAR(m1, 0.0, 5e-3);
  EXPECT_NEAR(m2, 1.0, 7e-3);
  EXPECT_NEAR(m4, 3.0, 5e-2);
}

TEST(Philox, UniformRangeAndMean) {
  const int64_t n = 1 << 18;
  const std::vector<float> u = rand_uniform(Shape{n}, 3, 1).to_vector<float>();
  double mean = 0;
  for (float v : u) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LT(v, 1.0f);
    mean += v;
  }
  // standard error of the mean: sqrt(1/12/n) ~ 5.6e-4; 5 standard errors
  EXPECT_NEAR(mean / n, 0.5, 2.8e-3);
}

TEST(Philox, ReproducibleAndStreamsDiffer) {
  const std::vector<float> a = randn(Shape{1000}, 5, 9).to_vector<float>();
  const std::vector<float> b = randn(Shape{1000}, 5, 9).to_vector<float>();
  const std::vector<float> c = randn(Shape{1000}, 5, 10).to_vector<float>();
  const std::vector<float> d = randn(Shape{1000}, 6, 9).to_vector<float>();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
  // Element i does not depend on how many elements are drawn.
  const std::vector<float> longer = randn(Shape{1003}, 5, 9).to_vector<float>();
  EXPECT_TRUE(std::equal(a.begin(), a.end(), longer.begin()));
  EXPECT_EQ(a[777], philox_normal(5, 9, 777));
}

TEST(Philox, CudaMatchesCpuBitForBit) {
  REQUIRE_GPU();
  for (int64_t n : {1, 3, 4, 1001, 1 << 20}) {
    const std::vector<float> cpu = randn(Shape{n}, 77, 5).to_vector<float>();
    const std::vector<float> gpu = randn(Shape{n}, 77, 5, Device::CUDA).to_vector<float>();
    ASSERT_EQ(cpu.size(), gpu.size());
    for (size_t i = 0; i < cpu.size(); ++i)
      ASSERT_EQ(float_to_bits(cpu[i]), float_to_bits(gpu[i])) << "normal " << i << " of " << n;
    const std::vector<float> ucpu = rand_uniform(Shape{n}, 77, 5).to_vector<float>();
    const std::vector<float> ugpu = rand_uniform(Shape{n}, 77, 5, Device::CUDA).to_vector<float>();
    EXPECT_EQ(ucpu, ugpu);
  }
}

}  // namespace
}  // namespace ddpm
