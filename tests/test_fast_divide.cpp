// FastDivide (kernels/fast_divide.h) against the divide instruction of the host: every
// dividend up to 2^17 for the divisors the convolutions meet (1 to 1100: channels, taps,
// map sides, strides), and the edges of the range (0, 1, d - 1, d, d + 1, multiples of d
// and their neighbours, 2^31 - 1 and below) for divisors up to 2^31 - 1, powers of two and
// their neighbours included (where the multiplier is largest or smallest).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/fast_divide.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

constexpr uint32_t kTop = (1u << 31) - 1;  // the largest dividend FastDivide takes

// Fails the test at the first wrong quotient or remainder, naming n and d.
bool divides(uint32_t n, const FastDivide& d) {
  const QuotientRemainder qr = divide(n, d);
  if (qr.q == n / d.divisor && qr.r == n % d.divisor) return true;
  ADD_FAILURE() << n << " / " << d.divisor << ": got " << qr.q << " rem " << qr.r << ", want "
                << n / d.divisor << " rem " << n % d.divisor;
  return false;
}

bool divides_the_edges(uint32_t d_value) {
  const FastDivide d(d_value);
  std::vector<uint32_t> n = {0, 1, d_value - 1, d_value, kTop, kTop - 1, kTop - d_value};
  if (d_value < kTop) n.push_back(d_value + 1);
  for (const uint32_t k : {2u, 3u, 1000u, kTop / d_value}) {  // multiples and neighbours
    const uint64_t at = static_cast<uint64_t>(k) * d_value;
    for (const uint64_t v : {at - 1, at, at + 1})
      if (v <= kTop) n.push_back(static_cast<uint32_t>(v));
  }
  for (const uint32_t v : n)
    if (!divides(v, d)) return false;
  return true;
}

TEST(FastDivide, EveryDividendUpTo2To17ForTheConvolutionsDivisors) {
  for (uint32_t d = 1; d <= 1100; ++d) {
    const FastDivide fd(d);
    for (uint32_t n = 0; n < (1u << 17); ++n)
      if (!divides(n, fd)) return;
  }
}

TEST(FastDivide, TheEdgesOfTheRangeForDivisorsUpTo2To31) {
  for (uint32_t d = 1; d <= 5000; ++d)
    if (!divides_the_edges(d)) return;
  for (uint32_t l = 1; l <= 31; ++l) {  // 2^l and its neighbours, below 2^31
    const uint64_t p = uint64_t{1} << l;
    for (const uint64_t d : {p - 1, p, p + 1})
      if (d >= 1 && d <= kTop && !divides_the_edges(static_cast<uint32_t>(d))) return;
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> divisor(1, kTop), dividend(0, kTop);
  for (int i = 0; i < 20000; ++i) {
    const FastDivide d(divisor(rng));
    if (!divides_the_edges(d.divisor)) return;
    for (int j = 0; j < 16; ++j)
      if (!divides(dividend(rng), d)) return;
  }
}

// split3 (a pixel into (image, row, column), a K index into (kh, kw, channel)): every index
// of a few shapes, odd extents and ones among them, as the convolutions' loaders split them.
TEST(FastDivide, Split3TakesAFlatIndexApartByItsTwoInnerExtents) {
  for (const uint32_t inner : {1u, 3u, 7u, 128u})
    for (const uint32_t middle : {1u, 3u, 5u, 32u}) {
      const FastDivide by_inner(inner), by_middle(middle);
      for (uint32_t n = 0; n < 4 * inner * middle; ++n) {
        const Split3 p = split3(n, by_inner, by_middle);
        ASSERT_TRUE(p.inner < inner && p.middle < middle &&
                    (p.outer * middle + p.middle) * inner + p.inner == n)
            << n << " over " << middle << " x " << inner << ": (" << p.outer << ", " << p.middle
            << ", " << p.inner << ")";
      }
    }
}

TEST(FastDivide, RefusesADivisorOutsideItsRange) {
  for (const int64_t d : {int64_t{0}, int64_t{-3}, int64_t{1} << 31}) {
    const std::string message = "FastDivide: divisor " + std::to_string(d) + " is not in [1, 2^31)";
    test::expect_error([d] { (void)FastDivide(d); }, {message.c_str()});
  }
}

}  // namespace
}  // namespace ddpm
