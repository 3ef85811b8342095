// The samplers (models/ddpm/sampler.h) step by step against the papers' update rules,
// written here on their own in double precision from alpha_bar alone (not from the respaced
// Schedule's tables, not through the engine's ops):
// - DDPM, Ho et al. 2020, Algorithm 2 in its epsilon form:
//     x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z,
//   sigma_t^2 = beta_t (fixed_large) or beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t),
//   no noise at the last step; with clipping, the posterior mean from the clipped x0 instead
//   (coef1 x0 + coef2 x_t, the form Algorithm 2 is a rewriting of);
// - DDIM, Song et al. 2021, eq. 12 with eq. 16's sigma.
// Over respaced timesteps tau (beta_i = 1 - abar_{tau_i} / abar_{tau_{i-1}}) as well as all of
// them. The denoiser is a fixed nonlinear function of (x_t, t); the noise z of step i is
// redrawn from (seed, kSamplerStepStream + i), the sampler's documented stream, so every
// value of the loop is known and the final samples are compared element by element.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "models/ddpm/sampler.h"
#include "models/ddpm/schedule.h"

namespace ddpm {
namespace {

constexpr int kT = 12;
constexpr uint64_t kSeed = 17;
const Shape kShape{3, 4};

// eps_hat(x, t): depends on both, large enough that clipping at 0.8 bites.
double eps_hat(double x, int t) { return std::tanh(0.9 * x + 0.15 * t - 0.6); }

Tensor denoise(const Tensor& x_t, const std::vector<int>& t) {
  const std::vector<float> x = x_t.to_vector<float>();
  const int64_t per = x_t.numel() / x_t.shape()[0];
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    out[i] = static_cast<float>(eps_hat(x[i], t[i / static_cast<size_t>(per)]));
  return Tensor::from_vector(x_t.shape(), out);
}

struct StepCase {
  std::string name;
  SamplerKind kind;
  int steps;  // 0: all kT
  bool fixed_large, clip;
  double eta;
};

void PrintTo(const StepCase& c, std::ostream* os) { *os << c.name; }

// The loop of the papers, from x_T = start.
std::vector<double> reference(const Schedule& s, const StepCase& c, const std::vector<float>& start) {
  const std::vector<int> tau = even_timesteps(kT, c.steps == 0 ? kT : c.steps);
  std::vector<double> x(start.begin(), start.end());
  constexpr double kClip = 0.8;
  for (int i = static_cast<int>(tau.size()) - 1; i >= 0; --i) {
    const double ab = s.alpha_bar[tau[i]], ab_prev = i > 0 ? s.alpha_bar[tau[i - 1]] : 1.0;
    const double beta = 1 - ab / ab_prev, alpha = 1 - beta;
    const double beta_tilde = beta * (1 - ab_prev) / (1 - ab);
    double sigma = 0;
    if (c.kind == SamplerKind::Ddpm)
      sigma = i == 0 ? 0 : std::sqrt(c.fixed_large ? beta : beta_tilde);
    else
      sigma = c.eta * std::sqrt((1 - ab_prev) / (1 - ab)) * std::sqrt(1 - ab / ab_prev);
    std::vector<float> z;
    if (i > 0 && sigma > 0)
      z = randn(kShape, kSeed, kSamplerStepStream + static_cast<uint64_t>(i)).to_vector<float>();
    for (size_t k = 0; k < x.size(); ++k) {
      const double e = eps_hat(static_cast<float>(x[k]), tau[i]);
      double x0 = (x[k] - std::sqrt(1 - ab) * e) / std::sqrt(ab);
      if (c.clip) x0 = std::clamp(x0, -kClip, kClip);
      double next;
      if (c.kind == SamplerKind::Ddim) {
        const double e_implied = (x[k] - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
        next = std::sqrt(ab_prev) * x0 + std::sqrt(1 - ab_prev - sigma * sigma) * e_implied;
      } else if (c.clip) {
        next = std::sqrt(ab_prev) * beta / (1 - ab) * x0 +
               std::sqrt(alpha) * (1 - ab_prev) / (1 - ab) * x[k];
      } else {
        next = (x[k] - beta / std::sqrt(1 - ab) * e) / std::sqrt(alpha);  // Algorithm 2
      }
      x[k] = next + (z.empty() ? 0.0 : sigma * z[k]);
    }
  }
  return x;
}

class SamplerSteps : public ::testing::TestWithParam<StepCase> {};

TEST_P(SamplerSteps, FollowThePapersUpdateRules) {
  const StepCase c = GetParam();
  const Schedule s = make_schedule({ScheduleKind::Linear, kT, 0.01, 0.3});
  SamplerConfig cfg;
  cfg.kind = c.kind;
  cfg.steps = c.steps;
  cfg.fixed_large = c.fixed_large;
  cfg.clip_x0 = c.clip;
  cfg.clip_range = 0.8;
  cfg.eta = c.eta;
  const Tensor start = randn(kShape, 3, 4);
  const std::vector<float> got =
      sample(s, denoise, cfg, kShape, kSeed, Device::CPU, start).x0.to_vector<float>();
  const std::vector<double> want = reference(s, c, start.to_vector<float>());
  ASSERT_EQ(got.size(), want.size());
  // The engine stores x in f32 between steps and rounds each step's coefficients to f32:
  // a few f32 ulps a step, compounded over <= 12 steps of gains near 1.
  for (size_t k = 0; k < got.size(); ++k)
    EXPECT_NEAR(got[k], want[k], 2e-5 * (1 + std::fabs(want[k]))) << "element " << k;
}

INSTANTIATE_TEST_SUITE_P(
    Samplers, SamplerSteps,
    ::testing::Values(StepCase{"ddpm_fixed_large", SamplerKind::Ddpm, 0, true, false, 0},
                      StepCase{"ddpm_fixed_small", SamplerKind::Ddpm, 0, false, false, 0},
                      StepCase{"ddpm_fixed_small_clipped", SamplerKind::Ddpm, 0, false, true, 0},
                      StepCase{"ddpm_fixed_large_respaced", SamplerKind::Ddpm, 5, true, false, 0},
                      StepCase{"ddpm_clipped_respaced", SamplerKind::Ddpm, 4, false, true, 0},
                      StepCase{"ddim_eta0_respaced", SamplerKind::Ddim, 4, false, false, 0},
                      StepCase{"ddim_eta_half_clipped", SamplerKind::Ddim, 0, false, true, 0.5},
                      StepCase{"ddim_eta1_respaced", SamplerKind::Ddim, 6, false, false, 1}),
    [](const ::testing::TestParamInfo<StepCase>& param_info) { return param_info.param.name; });

// The reference above must tell the choices apart, or the comparisons prove little: each
// pair differs by more than the tolerance somewhere.
TEST(SamplerSteps, TheCasesDiffer) {
  const Schedule s = make_schedule({ScheduleKind::Linear, kT, 0.01, 0.3});
  const std::vector<float> start = randn(kShape, 3, 4).to_vector<float>();
  auto gap = [&](const StepCase& a, const StepCase& b) {
    const std::vector<double> x = reference(s, a, start), y = reference(s, b, start);
    double g = 0;
    for (size_t k = 0; k < x.size(); ++k) g = std::max(g, std::fabs(x[k] - y[k]));
    return g;
  };
  const StepCase large{"", SamplerKind::Ddpm, 0, true, false, 0};
  const StepCase small{"", SamplerKind::Ddpm, 0, false, false, 0};
  const StepCase clipped{"", SamplerKind::Ddpm, 0, false, true, 0};
  EXPECT_GT(gap(large, small), 1e-2);
  EXPECT_GT(gap(small, clipped), 1e-2);
}

}  // namespace
}  // namespace ddpm
