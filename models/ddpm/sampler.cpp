#include "models/ddpm/sampler.h"

#include <algorithm>
#include <cmath>

namespace ddpm {

namespace {
constexpr uint64_t kStartStream = 0x5A3B000000000000ull;
constexpr uint64_t kStepStream = 0x5A3B000000000001ull;
}  // namespace

SamplerKind parse_sampler_kind(const std::string& name) {
  if (name == "ddpm") return SamplerKind::Ddpm;
  if (name == "ddim") return SamplerKind::Ddim;
  THROW_ERROR("unknown sampler '" << name << "' (expected ddpm or ddim)");
}

SampleResult sample(const Schedule& schedule, const Denoiser& denoiser, const SamplerConfig& c,
                    const Shape& shape, uint64_t seed, Device device, const Tensor& start) {
  NoGradGuard no_grad;
  CHECK(c.eta >= 0, "sampler: eta must be >= 0, got " << c.eta);
  CHECK(c.clip_range > 0, "sampler: clip_range must be > 0, got " << c.clip_range);
  const std::vector<int> tau = even_timesteps(schedule.T, c.steps == 0 ? schedule.T : c.steps);
  const Schedule rs = respace(schedule, tau);
  const int64_t n = shape[0];
  Tensor x = start.defined() ? start : randn(shape, seed, kStartStream, device);
  CHECK(x.shape() == shape, "sampler: start noise " << x.describe() << " is not " << shape.str());
  SampleResult result;
  for (int i = rs.T - 1; i >= 0; --i) {
    const std::vector<int> t_model(n, tau[i]);
    const Tensor pred = denoiser(x, t_model);
    NoiseLevels lv;
    lv.signal.assign(n, rs.sqrt_alpha_bar[i]);
    lv.noise.assign(n, rs.sqrt_one_minus_alpha_bar[i]);
    Tensor x0 = x0_from(c.target, lv, x, pred);
    if (c.clip_x0) x0 = clamp(x0, -c.clip_range, c.clip_range);
    for (int r : c.record)
      if (r == i) result.progress.emplace_back(tau[i], x0.clone());

    double sigma = 0;
    if (c.kind == SamplerKind::Ddpm) {
      x = combine(std::vector<double>(n, rs.posterior_coef1[i]), x0,
                  std::vector<double>(n, rs.posterior_coef2[i]), x);
      sigma = std::sqrt(c.fixed_large ? rs.beta[i] : rs.posterior_variance[i]);
    } else {
      const double ab = rs.alpha_bar[i], ab_prev = rs.alpha_bar_prev[i];
      sigma = c.eta * std::sqrt((1 - ab_prev) / (1 - ab)) * std::sqrt(1 - ab / ab_prev);
      const Tensor eps = eps_from_x0(lv, x, x0);
      const double dir = std::sqrt(std::max(0.0, 1 - ab_prev - sigma * sigma));
      x = combine(std::vector<double>(n, std::sqrt(ab_prev)), x0, std::vector<double>(n, dir), eps);
    }
    if (i > 0 && sigma > 0) {
      const Tensor z = randn(shape, seed, kStepStream + static_cast<uint64_t>(i), device);
      x = combine(std::vector<double>(n, 1.0), x, std::vector<double>(n, sigma),
                  z.to(x.dtype()));
    }
  }
  result.x0 = x;
  return result;
}

Tensor slerp(const Tensor& a, const Tensor& b, int64_t n) {
  CHECK(a.shape() == b.shape() && a.shape()[0] == 1 && n >= 1,
        "slerp: need two (1, ...) tensors of one shape and n >= 1, got " << a.describe() << ", "
                                                                        << b.describe());
  const std::vector<float> av = a.to(Device::CPU).to_vector<float>(),
                           bv = b.to(Device::CPU).to_vector<float>();
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    dot += double(av[i]) * bv[i];
    na += double(av[i]) * av[i];
    nb += double(bv[i]) * bv[i];
  }
  const double theta = std::acos(std::clamp(dot / std::sqrt(na * nb), -1.0, 1.0));
  std::vector<float> z;
  for (int64_t k = 0; k < n; ++k) {
    const double f = n == 1 ? 0.0 : double(k) / double(n - 1);
    const double wa = theta < 1e-6 ? 1 - f : std::sin((1 - f) * theta) / std::sin(theta);
    const double wb = theta < 1e-6 ? f : std::sin(f * theta) / std::sin(theta);
    for (size_t i = 0; i < av.size(); ++i) z.push_back(static_cast<float>(wa * av[i] + wb * bv[i]));
  }
  std::vector<int64_t> dims = {n};
  for (int d = 1; d < a.shape().ndim(); ++d) dims.push_back(a.shape()[d]);
  return Tensor::from_vector(Shape(dims), z).to(a.device());
}

}  // namespace ddpm
