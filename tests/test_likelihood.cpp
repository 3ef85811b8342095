// The variational bound in bits/dim (models/ddpm/likelihood.h):
// - against an independent double-precision computation on a small case: a denoiser whose
//   x0 estimate is a fixed function of (t, position), so every term is deterministic (x_t
//   cancels from the KL's mean difference), for each target, variance and clipping choice;
//   the schedule's tables rebuilt here from the betas, the decoder integrated with erf;
// - the stratified estimate (K < T) against the full sum: unbiased, within its standard
//   error;
// - against the closed form for Gaussian data N(0, s^2) and the oracle denoiser
//   E[x0 | x_t] = sqrt(abar) s^2 / (abar s^2 + 1 - abar) x_t (continuous decoder), and above
//   the data's true NLL, as a bound must be.
#include <gtest/gtest.h>

#include <cmath>

#include "models/ddpm/likelihood.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

constexpr int kT = 20;

Schedule linear_schedule(int T) {
  ScheduleConfig sc;
  sc.kind = ScheduleKind::Linear;
  sc.T = T;
  return make_schedule(sc);
}

// The x0 estimate of the deterministic denoiser: outside [-1, 1] at some (t, d), so clipping
// matters.
double fixed_x0(int t, int64_t d) { return 1.3 * std::sin(0.7 * t + 1.1 * static_cast<double>(d)); }

// A denoiser answering in `target` whose x0 (through the engine's conversion) is fixed_x0.
Denoiser fixed_denoiser(const Schedule& s, Target target) {
  return [&s, target](const Tensor& x_t, const std::vector<int>& t) {
    const int64_t n = x_t.shape()[0], dims = x_t.numel() / n;
    std::vector<float> x = x_t.to_vector<float>(), out(x.size());
    for (int64_t i = 0; i < n; ++i) {
      const double a = s.sqrt_alpha_bar[t[i]], b = s.sqrt_one_minus_alpha_bar[t[i]];
      for (int64_t d = 0; d < dims; ++d) {
        const double x0 = fixed_x0(t[i], d), xt = x[i * dims + d], eps = (xt - a * x0) / b;
        out[i * dims + d] = static_cast<float>(target == Target::X0        ? x0
                                               : target == Target::Epsilon ? eps
                                                                           : a * eps - b * x0);
      }
    }
    return Tensor::from_vector(x_t.shape(), out);
  };
}

// The bound for one image in nats, from the definitions, in double, without the Schedule.
double independent_bound(const std::vector<double>& x0, bool fixed_large, bool clip) {
  std::vector<double> beta(kT), abar(kT);
  double prod = 1;
  for (int t = 0; t < kT; ++t) {
    beta[t] = 1e-4 + (0.02 - 1e-4) * t / (kT - 1);
    prod *= 1 - beta[t];
    abar[t] = prod;
  }
  auto hat = [clip](int t, size_t d) {
    const double v = fixed_x0(t, static_cast<int64_t>(d));
    return clip ? std::min(1.0, std::max(-1.0, v)) : v;
  };
  auto gauss_kl = [](double mq, double vq, double mp, double vp) {
    return 0.5 * (std::log(vp / vq) + (vq + (mq - mp) * (mq - mp)) / vp - 1);
  };
  double total = 0;
  for (size_t d = 0; d < x0.size(); ++d) {
    // L_T
    total += gauss_kl(std::sqrt(abar[kT - 1]) * x0[d], 1 - abar[kT - 1], 0, 1);
    // L_{t-1}: posterior N(c1 x0 + c2 x_t, bt) against N(c1 x0_hat + c2 x_t, var), x_t = 0.4
    for (int t = 1; t < kT; ++t) {
      const double bt = beta[t] * (1 - abar[t - 1]) / (1 - abar[t]);
      const double c1 = std::sqrt(abar[t - 1]) * beta[t] / (1 - abar[t]);
      const double c2 = std::sqrt(1 - beta[t]) * (1 - abar[t - 1]) / (1 - abar[t]);
      total += gauss_kl(c1 * x0[d] + c2 * 0.4, bt, c1 * hat(t, d) + c2 * 0.4,
                        fixed_large ? beta[t] : bt);
    }
    // L_0: the bin of x0 under N(hat(0), beta_tilde_1), edges open at the ends
    const double sd = std::sqrt(beta[1] * (1 - abar[0]) / (1 - abar[1]));
    auto cdf = [&](double v) { return 0.5 * (1 + std::erf((v - hat(0, d)) / (sd * std::sqrt(2.0)))); };
    const double lo = x0[d] <= -1 ? 0.0 : cdf(x0[d] - 1.0 / 255);
    const double hi = x0[d] >= 1 ? 1.0 : cdf(x0[d] + 1.0 / 255);
    total -= std::log(std::max(hi - lo, 1e-12));
  }
  return total;
}

// Two 2x2x1 images on the 256 levels, the extremes included.
const std::vector<std::vector<int>> kLevels = {{0, 37, 128, 255}, {200, 255, 3, 91}};

Tensor level_images(int64_t first, int64_t count, int64_t copies = 1) {
  std::vector<float> v;
  for (int64_t i = first; i < first + count; ++i)
    for (int level : kLevels[(i / copies) % kLevels.size()]) v.push_back(level / 127.5f - 1.0f);
  return Tensor::from_vector(Shape{count, 2, 2, 1}, v);
}

TEST(Likelihood, MatchesAnIndependentComputationForEveryTargetAndVariance) {
  const Schedule s = linear_schedule(kT);
  for (Target target : {Target::Epsilon, Target::X0, Target::V})
    for (bool fixed_large : {true, false})
      for (bool clip : {true, false}) {
        LikelihoodConfig c;
        c.target = target;
        c.fixed_large = fixed_large;
        c.clip_x0 = clip;
        const Denoiser net = fixed_denoiser(s, target);
        const LikelihoodResult r = evaluate_likelihood(
            s, net, c, 2, [](int64_t f, int64_t n) { return level_images(f, n); });
        ASSERT_EQ(r.per_image.size(), 2u);
        for (int i = 0; i < 2; ++i) {
          std::vector<double> x0;
          for (int level : kLevels[i]) x0.push_back(static_cast<float>(level / 127.5f - 1.0f));
          const double expected = independent_bound(x0, fixed_large, clip) / (4 * std::log(2.0));
          EXPECT_NEAR(r.per_image[i], expected, 2e-5 * expected)
              << target_name(target) << " fixed_large " << fixed_large << " clip " << clip
              << " image " << i;
        }
        EXPECT_NEAR(r.bits_per_dim, (r.per_image[0] + r.per_image[1]) / 2, 1e-12);
        EXPECT_NEAR(r.prior_bpd + r.kl_bpd + r.decoder_bpd, r.bits_per_dim, 1e-9);
      }
}

TEST(Likelihood, TheStratifiedEstimateIsUnbiased) {
  const Schedule s = linear_schedule(kT);
  const Denoiser net = fixed_denoiser(s, Target::Epsilon);
  LikelihoodConfig full;
  const int64_t copies = 1500;
  auto source = [&](int64_t f, int64_t n) { return level_images(f, n, copies); };
  const LikelihoodResult exact = evaluate_likelihood(s, net, full, 2 * copies, source);
  for (int K : {1, 3, 7}) {
    LikelihoodConfig c;
    c.timesteps = K;
    c.seed = 11;
    const LikelihoodResult est = evaluate_likelihood(s, net, c, 2 * copies, source);
    EXPECT_EQ(est.terms_per_image, K + 1);
    EXPECT_GT(est.standard_error, 0);
    EXPECT_NEAR(est.bits_per_dim, exact.bits_per_dim, 4 * est.standard_error) << "K = " << K;
  }
}

TEST(Likelihood, GaussianDataWithTheOracleDenoiserMatchesTheClosedForm) {
  const int T = 100;
  const Schedule s = linear_schedule(T);
  const double sd = 0.5, var = sd * sd;
  auto oracle = [&](int t) {  // E[x0 | x_t] = oracle(t) x_t
    const double ab = s.alpha_bar[t];
    return std::sqrt(ab) * var / (ab * var + 1 - ab);
  };
  const Denoiser net = [&](const Tensor& x_t, const std::vector<int>& t) {
    const int64_t n = x_t.shape()[0], dims = x_t.numel() / n;
    std::vector<float> x = x_t.to_vector<float>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dims; ++d) x[i * dims + d] *= static_cast<float>(oracle(t[i]));
    return Tensor::from_vector(x_t.shape(), x);
  };
  // the expected bound per value, in nats
  auto mse = [&](int t) {  // E (x0 - oracle x_t)^2
    const double a = oracle(t), ab = s.alpha_bar[t];
    return var * std::pow(1 - a * std::sqrt(ab), 2) + a * a * (1 - ab);
  };
  const double ab_T = s.alpha_bar[T - 1];
  double nats = 0.5 * ((1 - ab_T) + ab_T * var - 1 - std::log(1 - ab_T));
  for (int t = 1; t < T; ++t) {
    const double sp = s.beta[t], sq = s.posterior_variance[t], c1 = s.posterior_coef1[t];
    nats += 0.5 * (std::log(sp / sq) + sq / sp - 1) + c1 * c1 * mse(t) / (2 * sp);
  }
  const double s0 = s.posterior_variance[1];
  nats += 0.5 * std::log(2 * M_PI * s0) + mse(0) / (2 * s0);
  const double expected = nats / std::log(2.0);
  const double true_nll = 0.5 * std::log(2 * M_PI * M_E * var) / std::log(2.0);
  EXPECT_GT(expected, true_nll);  // a bound, and a loose one with fixed variances

  const int64_t n = 4000;
  const std::vector<float> data = randn(Shape{n * 8}, 5, 0).to_vector<float>();
  auto source = [&](int64_t f, int64_t count) {
    std::vector<float> v(data.begin() + f * 8, data.begin() + (f + count) * 8);
    for (float& x : v) x *= static_cast<float>(sd);
    return Tensor::from_vector(Shape{count, 2, 2, 2}, v);
  };
  for (int K : {0, 50}) {
    LikelihoodConfig c;
    c.target = Target::X0;
    c.clip_x0 = false;
    c.bins = 0;
    c.timesteps = K;
    c.batch = 500;
    const LikelihoodResult r = evaluate_likelihood(s, net, c, n, source);
    EXPECT_NEAR(r.bits_per_dim, expected, 4 * r.standard_error) << "K = " << K;
    // tight enough to mean something: the data's own spread, and the strata's on top
    EXPECT_LT(r.standard_error, 0.02 * expected) << "K = " << K;
  }
}

TEST(Likelihood, TheDecodersEndBinsTakeTheTails) {
  // The lowest level (-1) owns everything below its upper edge, the highest (+1) everything
  // above its lower edge (Ho et al. 2020, eq. 13). With the prediction on the level itself,
  // half a bin is ~0.4 of the decoder's sd here, so a bin closed at both edges would lose a
  // third of the probability.
  const Schedule s = linear_schedule(kT);
  const double sd = std::sqrt(s.posterior_variance[1]), half = 1.0 / 255;
  auto cdf = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
  const float x0[] = {-1.0f, 1.0f, -1.0f, 1.0f};
  const float hat[] = {-1.0f, 1.0f, -0.99f, 0.995f};
  double want = 0;
  for (int d = 0; d < 4; ++d)
    want -= std::log(x0[d] < 0 ? cdf((x0[d] + half - hat[d]) / sd)
                               : 1 - cdf((x0[d] - half - hat[d]) / sd));
  EXPECT_NEAR(decoder_nll(s, x0, hat, 4, 256), want, 1e-9 * std::fabs(want));
  EXPECT_GT(cdf(-half / sd), 0.3) << "the case must tell an open end bin from a closed one";
}

TEST(Likelihood, BadSettingsNameTheSetting) {
  const Schedule s = linear_schedule(kT);
  const Denoiser net = fixed_denoiser(s, Target::X0);
  auto source = [](int64_t f, int64_t n) { return level_images(f, n); };
  LikelihoodConfig c;
  c.timesteps = kT;
  test::expect_error([&] { evaluate_likelihood(s, net, c, 2, source); },
                     {"timesteps must be in [1, T - 1 = 19]", "20"});
  c = LikelihoodConfig{};
  c.bins = 1;
  test::expect_error([&] { evaluate_likelihood(s, net, c, 2, source); }, {"bins must be 0", "1"});
  test::expect_error([&] { evaluate_likelihood(s, net, LikelihoodConfig{}, 0, source); },
                     {"no images"});
}

}  // namespace
}  // namespace ddpm
