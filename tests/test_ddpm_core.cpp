// DDPM core: schedules against independently computed values, parameterization round trips,
// loss weights, timestep samplers, and the reverse samplers driven by an oracle denoiser on
// Gaussian data (whose optimal denoiser is known in closed form).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "models/ddpm/losses.h"
#include "models/ddpm/parameterization.h"
#include "models/ddpm/sampler.h"
#include "models/ddpm/schedule.h"
#include "models/ddpm/timestep_sampler.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;
using test::random_tensor;
using test::values;

// Reference values from an independent double-precision computation (Python, math module):
// linear: cumprod(1 - linspace(1e-4, 0.02, 1000)); cosine: the capped betas' cumprod.
TEST(Schedule, LinearMatchesIndependentValues) {
  const Schedule s = make_schedule({ScheduleKind::Linear, 1000});
  EXPECT_NEAR(s.alpha_bar[0], 0.9999, 1e-15);
  EXPECT_NEAR(s.alpha_bar[900] / 2.7024451955826425e-04, 1.0, 1e-9);
  EXPECT_NEAR(s.alpha_bar[999] / 4.0358297653756754e-05, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(s.beta[999], 0.02);
  EXPECT_EQ(s.alpha_bar_prev[0], 1.0);
  EXPECT_EQ(s.posterior_variance[0], 0.0);
  // sigma^2 = beta at t = 0: w = beta^2 / (2 beta alpha beta) = 1 / (2 alpha)
  EXPECT_NEAR(s.vlb_weight[0], 1.0 / (2 * 0.9999), 1e-12);
  for (int t : {0, 1, 500, 999}) {
    EXPECT_NEAR(s.snr[t], s.alpha_bar[t] / (1 - s.alpha_bar[t]), 1e-12 * s.snr[t]);
    EXPECT_NEAR(std::exp(s.log_snr[t]), s.snr[t], 1e-9 * s.snr[t]);
    // The posterior mean is exact for x_t built from x0 with no noise... check the identity
    // coef1 sqrt(abar_prev)... via: coef1 + coef2 sqrt(alpha) ... simpler: variance identity
    EXPECT_NEAR(s.posterior_variance[t] * (1 - s.alpha_bar[t]),
                s.beta[t] * (1 - s.alpha_bar_prev[t]), 1e-15);
  }
}

TEST(Schedule, CosineMatchesIndependentValues) {
  const Schedule lin = make_schedule({ScheduleKind::Linear, 1000});
  const Schedule cos = make_schedule({ScheduleKind::Cosine, 1000});
  EXPECT_NEAR(cos.alpha_bar[900] / 2.3616108794393863e-02, 1.0, 1e-9);
  EXPECT_NEAR(cos.alpha_bar[999] / 2.4287669070348567e-09, 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(cos.beta[999], 0.999) << "the last beta is capped";
  EXPECT_NEAR(cos.alpha_bar[900] / lin.alpha_bar[900], 87.388, 0.01);
  for (int t = 1; t < 1000; ++t) ASSERT_LT(cos.alpha_bar[t], cos.alpha_bar[t - 1]);
  expect_error([] { parse_schedule_kind("quadratic"); }, {"unknown schedule 'quadratic'"});
}

TEST(Schedule, TableHasEveryColumnAndRow) {
  const Schedule s = make_schedule({ScheduleKind::Linear, 10});
  const std::string csv = schedule_table(s, false);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "t,beta,alpha_bar,alpha_bar_prev,posterior_variance,snr,log_snr,vlb_weight");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 11);
  const nlohmann::json rows = nlohmann::json::parse(schedule_table(s, true));
  ASSERT_EQ(rows.size(), 10u);
  EXPECT_EQ(rows[9]["t"], 9);
  EXPECT_DOUBLE_EQ(rows[9]["alpha_bar"].get<double>(), s.alpha_bar[9]);
  EXPECT_DOUBLE_EQ(rows[3]["vlb_weight"].get<double>(), s.vlb_weight[3]);
}

TEST(Schedule, RespacingKeepsAlphaBar) {
  const Schedule s = make_schedule({ScheduleKind::Cosine, 1000});
  const std::vector<int> tau = even_timesteps(1000, 50);
  EXPECT_EQ(tau.front(), 0);
  EXPECT_EQ(tau.back(), 999);
  EXPECT_EQ(tau.size(), 50u);
  const Schedule r = respace(s, tau);
  // 50 ratios multiplied back: rounding ~ 50 * 1e-16 relative per step, far below 1e-10.
  for (int i = 0; i < 50; ++i) EXPECT_NEAR(r.alpha_bar[i] / s.alpha_bar[tau[i]], 1.0, 1e-10);
  EXPECT_EQ(even_timesteps(1000, 1), std::vector<int>{999});
  // round(i (T-1) / (K-1)), halves away from zero: 99 i / 6 = 16.5, 49.5, 82.5 -> 17, 50, 83
  EXPECT_EQ(even_timesteps(100, 7), (std::vector<int>{0, 17, 33, 50, 66, 83, 99}));
  EXPECT_EQ(even_timesteps(10, 3), (std::vector<int>{0, 5, 9}));
  expect_error([] { even_timesteps(10, 11); }, {"sampling steps must be in [1, 10]"});
}

TEST(Parameterization, ConversionsRoundTrip) {
  const Schedule s = make_schedule({ScheduleKind::Linear, 1000});
  const std::vector<int> t = {0, 17, 500, 999};
  const NoiseLevels lv = NoiseLevels::at(s, t);
  const Tensor x0 = random_tensor({4, 3, 5, 2}, 1, DType::F32);
  const Tensor eps = random_tensor({4, 3, 5, 2}, 2, DType::F32);
  const Tensor x_t = make_x_t(lv, x0, eps);
  for (Target target : {Target::Epsilon, Target::X0, Target::V}) {
    const Tensor pred = target_from(target, lv, x0, eps);
    const std::vector<double> a = values(x0_from(target, lv, x_t, pred)), b = values(x0);
    const std::vector<double> c = values(eps_from(target, lv, x_t, pred)), d = values(eps);
    for (size_t i = 0; i < a.size(); ++i) {
      // x0 from eps at t = 999 divides by sqrt(abar) = 0.0064: float error grows by 1/0.0064,
      // so compare relative to that amplification.
      ASSERT_NEAR(a[i], b[i], 1e-5 / s.sqrt_alpha_bar[999]) << target_name(target);
      ASSERT_NEAR(c[i], d[i], 1e-5 / s.sqrt_one_minus_alpha_bar[0]) << target_name(target);
    }
  }
  // v = sqrt(abar) eps - sqrt(1-abar) x0, element by element
  const std::vector<double> v = values(target_from(Target::V, lv, x0, eps));
  const std::vector<double> xv = values(x0), ev = values(eps);
  EXPECT_NEAR(v[31], lv.signal[1] * ev[31] - lv.noise[1] * xv[31], 1e-6);
}

TEST(Losses, VlbWeightsAgreeAcrossParameterizations) {
  // The same imperfect prediction, expressed as eps, x0 or v, must give the same VLB term.
  const Schedule s = make_schedule({ScheduleKind::Cosine, 1000});
  const std::vector<int> t = {3, 250, 700, 990};
  const NoiseLevels lv = NoiseLevels::at(s, t);
  const Tensor x0 = random_tensor({4, 8}, 1), eps = random_tensor({4, 8}, 2);
  const Tensor x_t = make_x_t(lv, x0, eps);
  const Tensor eps_hat = add(eps, random_tensor({4, 8}, 3, DType::F64, 0.1));
  const Tensor x0_hat = x0_from(Target::Epsilon, lv, x_t, eps_hat);
  const LossConfig vlb{LossKind::Vlb};
  std::vector<std::vector<double>> per;
  for (Target target : {Target::Epsilon, Target::X0, Target::V}) {
    const Tensor pred = target_from(target, lv, x0_hat, eps_hat);
    const Tensor truth = target_from(target, lv, x0, eps);
    per.push_back(diffusion_loss(pred, truth, t, loss_weights(s, target, vlb), {}).per_sample);
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(per[1][i] / per[0][i], 1.0, 1e-9) << "x0 vs eps at t=" << t[i];
    EXPECT_NEAR(per[2][i] / per[0][i], 1.0, 1e-9) << "v vs eps at t=" << t[i];
  }
  const std::vector<double> w = loss_weights(s, Target::Epsilon, vlb);
  EXPECT_EQ(w, s.vlb_weight);
  const std::vector<double> h = loss_weights(s, Target::Epsilon, {LossKind::Hybrid, 0.001});
  EXPECT_NEAR(h[500], 1 + 0.001 * w[500], 1e-15);
  EXPECT_EQ(loss_weights(s, Target::V, {}), std::vector<double>(1000, 1.0));
}

TEST(Losses, VlbClampCapsEveryTargetsWeight) {
  // A clamp at half the largest VLB weight must cap each target's weights where they exceed
  // it, in vlb (min(v, clamp)) and in hybrid (1 + lambda min(v, clamp)), and leave the rest.
  const Schedule s = make_schedule({ScheduleKind::Cosine, 1000});
  for (Target target : {Target::Epsilon, Target::X0, Target::V}) {
    const std::vector<double> free = loss_weights(s, target, {LossKind::Vlb});
    const double clamp = 0.5 * *std::max_element(free.begin(), free.end());
    LossConfig capped{LossKind::Vlb};
    capped.vlb_clamp = clamp;
    const std::vector<double> w = loss_weights(s, target, capped);
    LossConfig hybrid{LossKind::Hybrid, 0.01};
    hybrid.vlb_clamp = clamp;
    const std::vector<double> h = loss_weights(s, target, hybrid);
    int capped_count = 0;
    for (int t = 0; t < 1000; ++t) {
      ASSERT_EQ(w[t], std::min(free[t], clamp)) << target_name(target) << " t=" << t;
      ASSERT_EQ(h[t], 1.0 + 0.01 * std::min(free[t], clamp)) << target_name(target) << " t=" << t;
      capped_count += free[t] > clamp;
    }
    EXPECT_GT(capped_count, 0) << target_name(target) << ": the clamp must bite somewhere";
  }
}

TEST(Losses, WeightedLossValueAndGradient) {
  const std::vector<int> t = {1, 4, 2};
  const std::vector<double> weights = {0.5, 1.0, 2.0, 3.0, 4.0};
  const std::vector<double> importance = {1.5, 0.25, 1.0};
  const Tensor pred = random_tensor({3, 4}, 1), truth = random_tensor({3, 4}, 2);
  const LossResult r = diffusion_loss(pred, truth, t, weights, importance);
  const std::vector<double> p = values(pred), q = values(truth);
  double expected = 0;
  for (int n = 0; n < 3; ++n) {
    double m = 0;
    for (int i = 0; i < 4; ++i) m += std::pow(p[n * 4 + i] - q[n * 4 + i], 2) / 4;
    EXPECT_NEAR(r.per_sample[n], weights[t[n]] * m, 1e-12);
    expected += weights[t[n]] * importance[n] * m / 3;
  }
  EXPECT_NEAR(r.loss.item(), expected, 1e-12);
  tape().clear();
  test::expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return diffusion_loss(in[0], truth, t, weights, importance).loss;
      },
      {random_tensor({3, 4}, 1)});
}

TEST(TimestepSampler, StratifiedCoversEveryStratum) {
  const TimestepSampler s(TimestepSamplerKind::Stratified, 1000);
  for (uint64_t step = 0; step < 20; ++step) {
    const TimestepBatch b = s.sample(64, 5, step);
    std::vector<int> per_stratum(64, 0);
    for (int t : b.t) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, 1000);
      ++per_stratum[t * 64 / 1000];
    }
    for (int c : per_stratum) ASSERT_EQ(c, 1);
    EXPECT_FALSE(std::is_sorted(b.t.begin(), b.t.end())) << "strata are shuffled";
  }
}

TEST(TimestepSampler, UniformMean) {
  const TimestepSampler s(TimestepSamplerKind::Uniform, 1000);
  const TimestepBatch b = s.sample(100000, 1, 2);
  const double mean = std::accumulate(b.t.begin(), b.t.end(), 0.0) / b.t.size();
  // std of U{0..999} is 288.7; standard error 0.91; 5 sigma
  EXPECT_NEAR(mean, 499.5, 4.6);
  for (double w : b.weights) ASSERT_EQ(w, 1.0);
}

TEST(TimestepSampler, ImportanceWeightsAreUnbiased) {
  const int T = 100;
  TimestepSampler s(TimestepSamplerKind::Importance, T);
  auto f = [](int t) { return 0.1 + std::pow(t / 10.0, 2); };  // losses grow with t
  // Before the history is full: uniform, weight 1.
  EXPECT_FALSE(s.warmed_up());
  for (double w : s.sample(10, 1, 0).weights) EXPECT_EQ(w, 1.0);
  for (int round = 0; round < 10; ++round) {
    std::vector<int> t(T);
    std::iota(t.begin(), t.end(), 0);
    std::vector<double> l(T);
    for (int i = 0; i < T; ++i) l[i] = f(i);
    s.update(t, l);
  }
  ASSERT_TRUE(s.warmed_up());
  const std::vector<double> p = s.probabilities();
  EXPECT_GT(p[99] / p[0], 100.0) << "p_t ~ sqrt(E[L^2]) = f(t)";
  // Monte Carlo: the weighted mean of f over importance draws estimates the uniform mean.
  double uniform_mean = 0;
  for (int t = 0; t < T; ++t) uniform_mean += f(t) / T;
  const TimestepBatch b = s.sample(200000, 3, 4);
  double est = 0, est_sq = 0;
  for (size_t i = 0; i < b.t.size(); ++i) {
    const double v = b.weights[i] * f(b.t[i]);
    est += v;
    est_sq += v * v;
  }
  est /= b.t.size();
  const double std_err = std::sqrt((est_sq / b.t.size() - est * est) / b.t.size());
  EXPECT_NEAR(est, uniform_mean, 5 * std_err) << "5 standard errors (" << std_err << ")";
  EXPECT_LT(std_err, 0.01 * uniform_mean) << "importance sampling keeps the estimate tight";
  // State round trip.
  TimestepSampler copy(TimestepSamplerKind::Importance, T);
  copy.load_state(s.state());
  EXPECT_EQ(copy.probabilities(), p);
  TimestepSampler other(TimestepSamplerKind::Importance, 50);
  expect_error([&] { other.load_state(s.state()); }, {"T=100", "T=50"});
}

TEST(TimestepSampler, ImportanceProbabilitiesAreTheRootMeanSquareMixedWithUniform) {
  // T = 3, history 2, uniform share 0.25. Histories (oldest first) after the updates below:
  //   t=0: {1, 1}, rms 1;  t=1: {0, 2}, rms sqrt(2);  t=2: {3, 4}, rms sqrt(12.5)
  // (t=2 first held 9, overwritten by 4: the ring keeps the last `history` losses).
  // p_t = 0.75 rms_t / (1 + sqrt(2) + sqrt(12.5)) + 0.25 / 3; a mean instead of the root
  // mean square (1, 1, 3.5) or no uniform share gives other numbers.
  TimestepSampler s(TimestepSamplerKind::Importance, 3, 2, 0.25);
  s.update({0, 1, 2}, {1, 0, 9});
  EXPECT_FALSE(s.warmed_up());
  EXPECT_EQ(s.probabilities(), std::vector<double>(3, 1.0 / 3)) << "uniform until warmed up";
  s.update({2, 0, 1, 2}, {3, 1, 2, 4});
  ASSERT_TRUE(s.warmed_up());
  const double total = 1 + std::sqrt(2.0) + std::sqrt(12.5);
  const std::vector<double> want = {0.75 / total + 0.25 / 3, 0.75 * std::sqrt(2.0) / total + 0.25 / 3,
                                    0.75 * std::sqrt(12.5) / total + 0.25 / 3};
  const std::vector<double> p = s.probabilities();
  for (int t = 0; t < 3; ++t) EXPECT_NEAR(p[t], want[t], 1e-15) << "t=" << t;
  // Each draw's weight is 1 / (T p_t).
  const TimestepBatch b = s.sample(64, 9, 1);
  for (int i = 0; i < 64; ++i) ASSERT_NEAR(b.weights[i], 1.0 / (3 * want[b.t[i]]), 1e-12);
}

// Data x0 ~ N(mu, diag(sd^2)) in 2-D. For this data the MMSE predictions are closed-form:
//   E[x0 | x_t] = mu + sqrt(ab) sd^2 (x_t - sqrt(ab) mu) / (ab sd^2 + 1 - ab)
//   E[eps | x_t] = (x_t - sqrt(ab) E[x0 | x_t]) / sqrt(1 - ab)
struct GaussianOracle {
  const Schedule* schedule;
  Target target;
  double mu[2] = {0.5, -0.3}, sd[2] = {0.5, 0.2};

  Tensor operator()(const Tensor& x_t, const std::vector<int>& t) const {
    const std::vector<float> x = x_t.to_vector<float>();
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const int n = static_cast<int>(i / 2), d = static_cast<int>(i % 2);
      const double ab = schedule->alpha_bar[t[n]], s2 = sd[d] * sd[d];
      const double x0 = mu[d] + std::sqrt(ab) * s2 * (x[i] - std::sqrt(ab) * mu[d]) / (ab * s2 + 1 - ab);
      const double eps = (x[i] - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
      out[i] = static_cast<float>(target == Target::Epsilon ? eps
                                  : target == Target::X0    ? x0
                                                            : std::sqrt(ab) * eps - std::sqrt(1 - ab) * x0);
    }
    return Tensor::from_vector(x_t.shape(), out);
  }
};

struct SamplerCase {
  const char* name;
  SamplerKind kind;
  int steps;
  double eta;
  bool fixed_large;
  Target target;
  ScheduleKind schedule;
};

void PrintTo(const SamplerCase& c, std::ostream* os) { *os << c.name; }

class OracleSampling : public ::testing::TestWithParam<SamplerCase> {};

TEST_P(OracleSampling, RecoversTheDataMeanAndVariance) {
  const SamplerCase c = GetParam();
  const Schedule s = make_schedule({c.schedule, 1000});
  const GaussianOracle oracle{&s, c.target};
  SamplerConfig cfg;
  cfg.kind = c.kind;
  cfg.steps = c.steps;
  cfg.eta = c.eta;
  cfg.fixed_large = c.fixed_large;
  cfg.clip_x0 = false;
  cfg.target = c.target;
  const int64_t n = 4000;
  const SampleResult r = sample(s, oracle, cfg, Shape{n, 2}, 11, Device::CPU);
  const std::vector<float> x = r.x0.to_vector<float>();
  for (int d = 0; d < 2; ++d) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; ++i) m += x[i * 2 + d] / double(n);
    for (int64_t i = 0; i < n; ++i) v += std::pow(x[i * 2 + d] - m, 2) / double(n - 1);
    const double sd = std::sqrt(v);
    // Monte Carlo alone: mean +- sd/sqrt(n) = 0.008 (dim 0), sd +- sd/sqrt(2n) = 1.1%.
    // fixed_small is biased low (its step variance beta_tilde omits Var[x0 | x_t]); measured
    // sd ratios: fixed_small 0.968-0.983, fixed_large 0.990-0.992, DDIM eta=0 1.011-1.015.
    // Bounds: 4 standard errors on the mean; 6% on the sd (the 3.3% bias + 2.5 errors).
    EXPECT_NEAR(m, oracle.mu[d], 4 * oracle.sd[d] / std::sqrt(double(n))) << "dim " << d;
    EXPECT_NEAR(sd / oracle.sd[d], 1.0, 0.06) << "dim " << d;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Samplers, OracleSampling,
    ::testing::Values(
        SamplerCase{"ddpm_fixed_small_eps", SamplerKind::Ddpm, 0, 0, false, Target::Epsilon, ScheduleKind::Linear},
        SamplerCase{"ddpm_fixed_large_eps", SamplerKind::Ddpm, 0, 0, true, Target::Epsilon, ScheduleKind::Linear},
        SamplerCase{"ddpm_fixed_small_x0_cosine", SamplerKind::Ddpm, 0, 0, false, Target::X0, ScheduleKind::Cosine},
        SamplerCase{"ddpm_fixed_small_v", SamplerKind::Ddpm, 0, 0, false, Target::V, ScheduleKind::Linear},
        SamplerCase{"ddim_eta0_eps", SamplerKind::Ddim, 0, 0, false, Target::Epsilon, ScheduleKind::Linear},
        SamplerCase{"ddim_eta0_v_cosine", SamplerKind::Ddim, 0, 0, false, Target::V, ScheduleKind::Cosine},
        SamplerCase{"ddim_eta1_x0", SamplerKind::Ddim, 0, 1, false, Target::X0, ScheduleKind::Linear}),
    [](const ::testing::TestParamInfo<SamplerCase>& param_info) {
      return std::string(param_info.param.name);
    });

// The sd of DDIM (eta = 0) samples as the number of steps grows, from the same start noise:
// the discretisation error must shrink towards the 1000-step result.
TEST(OracleSampling, RespacedDdimConverges) {
  const Schedule s = make_schedule({ScheduleKind::Linear, 1000});
  const GaussianOracle oracle{&s, Target::Epsilon};
  auto sd_dim1 = [&](int steps) {
    SamplerConfig cfg;
    cfg.kind = SamplerKind::Ddim;
    cfg.steps = steps;
    cfg.clip_x0 = false;
    const std::vector<float> x = sample(s, oracle, cfg, Shape{2000, 2}, 5, Device::CPU).x0.to_vector<float>();
    double m = 0, v = 0;
    for (size_t i = 1; i < x.size(); i += 2) m += x[i] / 2000.0;
    for (size_t i = 1; i < x.size(); i += 2) v += (x[i] - m) * (x[i] - m) / 1999.0;
    return std::sqrt(v);
  };
  const double exact = sd_dim1(1000);
  const double e10 = std::fabs(sd_dim1(10) - exact), e50 = std::fabs(sd_dim1(50) - exact),
               e250 = std::fabs(sd_dim1(250) - exact);
  // DDIM is a first-order solver: 5x the steps, about 5x less error. Measured errors on the
  // 0.2-sd dimension: 0.098 (10 steps), 0.022 (50), 0.0036 (250); required: at least 3x each.
  EXPECT_LT(e50, e10 / 3);
  EXPECT_LT(e250, e50 / 3);
}

TEST(Slerp, EndpointsAndNorm) {
  const Tensor a = randn(Shape{1, 4, 4, 3}, 1, 1), b = randn(Shape{1, 4, 4, 3}, 1, 2);
  const Tensor z = slerp(a, b, 5);
  ASSERT_EQ(z.shape(), (Shape{5, 4, 4, 3}));
  const std::vector<float> zv = z.to_vector<float>(), av = a.to_vector<float>(), bv = b.to_vector<float>();
  for (size_t i = 0; i < av.size(); ++i) {
    EXPECT_NEAR(zv[i], av[i], 1e-6);
    EXPECT_NEAR(zv[4 * av.size() + i], bv[i], 1e-5);
  }
  // Between two vectors of similar norm the path keeps that norm (unlike a straight line).
  auto norm = [&](size_t k) {
    double s2 = 0;
    for (size_t i = 0; i < av.size(); ++i) s2 += double(zv[k * av.size() + i]) * zv[k * av.size() + i];
    return std::sqrt(s2);
  };
  EXPECT_NEAR(norm(2) / std::sqrt(norm(0) * norm(4)), 1.0, 0.05);
}

TEST(OracleSampling, DdimEtaZeroIsDeterministicAndRecordsProgress) {
  const Schedule s = make_schedule({ScheduleKind::Linear, 1000});
  const GaussianOracle oracle{&s, Target::Epsilon};
  SamplerConfig cfg;
  cfg.kind = SamplerKind::Ddim;
  cfg.steps = 20;
  cfg.clip_x0 = false;
  cfg.record = {19, 10, 0};
  const SampleResult a = sample(s, oracle, cfg, Shape{64, 2}, 3, Device::CPU);
  const SampleResult b = sample(s, oracle, cfg, Shape{64, 2}, 3, Device::CPU);
  EXPECT_EQ(a.x0.to_vector<float>(), b.x0.to_vector<float>());
  ASSERT_EQ(a.progress.size(), 3u);
  EXPECT_EQ(a.progress[0].first, 999);
  EXPECT_EQ(a.progress[2].first, 0);
  // At t = 999 the predicted x0 of this oracle is nearly the data mean for every sample.
  const std::vector<float> first = a.progress[0].second.to_vector<float>();
  EXPECT_NEAR(first[0], 0.5, 0.05);
  // The last prediction is (nearly) the sample itself.
  const std::vector<float> last = a.progress[2].second.to_vector<float>(), fin = a.x0.to_vector<float>();
  for (size_t i = 0; i < fin.size(); ++i) ASSERT_NEAR(last[i], fin[i], 1e-5);
}

}  // namespace
}  // namespace ddpm
