// Layers: the reference initialisation, and the smallest end-to-end job learning.
#include <gtest/gtest.h>

#include <cmath>

#include "models/layers.h"
#include "models/toy/sine_fit.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

TEST(Layers, FanAvgUniformInitialisation) {
  ParameterStore store;
  const Conv2d conv(store, "conv", 8, 16, 3, Conv2dParams::same(3));
  const Conv2d zero(store, "zero", 8, 16, 3, Conv2dParams::same(3), /*init_scale=*/0.0);
  const GroupNorm norm(store, "norm", 16, 4);
  store.finalize(Device::CPU, DType::F32, 7);
  // fan_in = 8*9, fan_out = 16*9: b = sqrt(3 / 108)
  const double bound = std::sqrt(3.0 / 108.0);
  double max_abs = 0, sq = 0;
  const std::vector<double> w = test::values(conv.weight());
  for (double v : w) {
    max_abs = std::max(max_abs, std::fabs(v));
    sq += v * v;
  }
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.95 * bound) << "1152 draws should reach near the bound";
  // U(-b, b) has variance b^2/3; 1152 draws: relative standard error ~ 2.6%, bound 15%
  EXPECT_NEAR(sq / w.size(), bound * bound / 3, 0.15 * bound * bound / 3);
  for (double v : test::values(conv.bias())) EXPECT_EQ(v, 0.0);
  for (double v : test::values(zero.weight())) EXPECT_EQ(v, 0.0);
  EXPECT_EQ(store.find("norm.gamma").to_vector<float>(), std::vector<float>(16, 1.0f));
  EXPECT_EQ(store.find("norm.beta").to_vector<float>(), std::vector<float>(16, 0.0f));
}

TEST(Layers, InitialisationIsReproducibleFromTheSeed) {
  auto draw = [](uint64_t seed) {
    ParameterStore store;
    const Linear l(store, "l", 5, 7);
    store.finalize(Device::CPU, DType::F32, seed);
    return l.weight().to_vector<float>();
  };
  EXPECT_EQ(draw(3), draw(3));
  EXPECT_NE(draw(3), draw(4));
}

TEST(Layers, SineFitLearns) {
  const SineFitResult r = fit_sine(1500, 0, 1500, nullptr);
  EXPECT_GT(r.initial_loss, 0.1);
  EXPECT_LT(r.final_loss, 0.1 * r.initial_loss) << "1500 steps of SGD (measured: 5.9e-4 from 0.45)";
}

}  // namespace
}  // namespace ddpm
