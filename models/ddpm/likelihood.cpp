#include "models/ddpm/likelihood.h"

#include <algorithm>
#include <cmath>

#include "engine/philox.h"

namespace ddpm {

namespace {

constexpr uint64_t kNoiseStream = 0x11D0000000000000ull;
constexpr uint64_t kTimeStream = 0x11D1000000000000ull;
constexpr double kMinProbability = 1e-12;

// P(Z <= z) and P(Z > z) for a standard normal, each from erfc so a tail keeps its digits.
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double normal_sf(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

// The per-value constant of a KL between N(m_q, s_q) and N(m_p, s_p): its part without means.
double kl_variance_part(double s_q, double s_p) {
  return 0.5 * (std::log(s_p / s_q) + s_q / s_p - 1.0);
}

}  // namespace

double prior_kl(const Schedule& s, const float* x0, int64_t dims) {
  const double ab = s.alpha_bar[s.T - 1], var = 1.0 - ab;
  double sum = 0;
  for (int64_t d = 0; d < dims; ++d) {
    const double mean = std::sqrt(ab) * x0[d];
    sum += 0.5 * (var + mean * mean - 1.0 - std::log(var));
  }
  return sum;
}

double posterior_kl(const Schedule& s, int t, bool fixed_large, const float* x0,
                    const float* x0_hat, int64_t dims) {
  CHECK(t >= 1 && t < s.T, "posterior_kl: t = " << t << " outside [1, " << s.T << ")");
  const double s_q = s.posterior_variance[t], s_p = fixed_large ? s.beta[t] : s_q;
  const double c = s.posterior_coef1[t];
  double squares = 0;
  for (int64_t d = 0; d < dims; ++d) {
    const double e = static_cast<double>(x0[d]) - x0_hat[d];
    squares += e * e;
  }
  return dims * kl_variance_part(s_q, s_p) + c * c * squares / (2.0 * s_p);
}

double decoder_nll(const Schedule& s, const float* x0, const float* x0_hat, int64_t dims,
                   int bins) {
  CHECK(s.T >= 2, "decoder_nll: the decoder's variance is beta_tilde_1: T must be >= 2");
  const double var = s.posterior_variance[1], sd = std::sqrt(var);
  double nll = 0;
  if (bins == 0) {
    for (int64_t d = 0; d < dims; ++d) {
      const double e = static_cast<double>(x0[d]) - x0_hat[d];
      nll += 0.5 * std::log(2.0 * M_PI * var) + e * e / (2.0 * var);
    }
    return nll;
  }
  CHECK(bins >= 2, "decoder_nll: bins must be 0 (continuous) or >= 2, got " << bins);
  const double half = 1.0 / (bins - 1);  // half a bin: the levels are 2 / (bins - 1) apart
  for (int64_t d = 0; d < dims; ++d) {
    const double x = x0[d], lo = (x - half - x0_hat[d]) / sd, hi = (x + half - x0_hat[d]) / sd;
    double p;
    if (x < -1.0 + half) {
      p = normal_cdf(hi);  // the lowest level: everything below its upper edge
    } else if (x > 1.0 - half) {
      p = normal_sf(lo);  // the highest: everything above its lower edge
    } else {
      p = lo > 0 ? normal_sf(lo) - normal_sf(hi) : normal_cdf(hi) - normal_cdf(lo);
    }
    nll -= std::log(std::max(p, kMinProbability));
  }
  return nll;
}

LikelihoodResult evaluate_likelihood(const Schedule& schedule, const Denoiser& denoiser,
                                     const LikelihoodConfig& c, int64_t n_images,
                                     const ImageSource& images,
                                     const LikelihoodProgress& progress) {
  NoGradGuard no_grad;
  const int T = schedule.T;
  CHECK(T >= 2, "likelihood: T must be >= 2, got " << T);
  const int K = c.timesteps == 0 ? T - 1 : c.timesteps;  // strata over [1, T)
  CHECK(K >= 1 && K <= T - 1, "likelihood: timesteps must be in [1, T - 1 = "
                                  << T - 1 << "] (0 = all), got " << c.timesteps);
  CHECK(n_images >= 1, "likelihood: no images to evaluate");
  CHECK(c.batch >= 1, "likelihood: batch must be >= 1, got " << c.batch);
  LikelihoodResult r;
  r.images = n_images;
  r.terms_per_image = K + 1;
  std::vector<double> prior(n_images, 0), kl(n_images, 0), decoder(n_images, 0);

  for (int64_t first = 0, batch_index = 0; first < n_images; first += c.batch, ++batch_index) {
    const int64_t n = std::min(c.batch, n_images - first);
    const Tensor x0 = images(first, n);
    CHECK(x0.shape().ndim() >= 2 && x0.shape()[0] == n,
          "likelihood: the image source gave " << x0.describe() << " for " << n << " images");
    const int64_t dims = x0.numel() / n;
    CHECK(r.dims == 0 || r.dims == dims, "likelihood: images of " << dims << " values after "
                                                                  << r.dims);
    r.dims = dims;
    const std::vector<float> x0_host = x0.to(DType::F32).to(Device::CPU).to_vector<float>();
    for (int64_t i = 0; i < n; ++i) prior[first + i] = prior_kl(schedule, &x0_host[i * dims], dims);

    // k = -1: the decoder at t = 0, every image; k >= 0: one t per image in stratum k of [1, T)
    for (int k = -1; k < K; ++k) {
      const int lo = k < 0 ? 0 : 1 + static_cast<int>(static_cast<int64_t>(k) * (T - 1) / K);
      const int size = k < 0 ? 1 : 1 + static_cast<int>(static_cast<int64_t>(k + 1) * (T - 1) / K) - lo;
      std::vector<int> t(n, lo);
      for (int64_t i = 0; i < n && size > 1; ++i) {
        const float u = philox_uniform(c.seed, kTimeStream + k, static_cast<uint64_t>(first + i));
        t[i] = lo + std::min(size - 1, static_cast<int>(u * size));
      }
      const NoiseLevels lv = NoiseLevels::at(schedule, t);
      const uint64_t stream = kNoiseStream + static_cast<uint64_t>(batch_index) * (K + 1) + (k + 1);
      const Tensor eps = randn(x0.shape(), c.seed, stream, x0.device()).to(x0.dtype());
      const Tensor x_t = make_x_t(lv, x0, eps);
      Tensor x0_hat = x0_from(c.target, lv, x_t, denoiser(x_t, t));
      if (c.clip_x0) x0_hat = clamp(x0_hat, -1.0, 1.0);
      const std::vector<float> hat = x0_hat.to(DType::F32).to(Device::CPU).to_vector<float>();
      for (int64_t i = 0; i < n; ++i) {
        const float *a = &x0_host[i * dims], *b = &hat[i * dims];
        if (k < 0) {
          decoder[first + i] = decoder_nll(schedule, a, b, dims, c.bins);
        } else {
          kl[first + i] += size * posterior_kl(schedule, t[i], c.fixed_large, a, b, dims);
        }
      }
    }
    if (progress) progress(first + n, n_images);
  }

  const double to_bits = 1.0 / (static_cast<double>(r.dims) * std::log(2.0));
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < n_images; ++i) {
    const double b = (prior[i] + kl[i] + decoder[i]) * to_bits;
    r.per_image.push_back(b);
    sum += b;
    r.prior_bpd += prior[i] * to_bits / n_images;
    r.kl_bpd += kl[i] * to_bits / n_images;
    r.decoder_bpd += decoder[i] * to_bits / n_images;
  }
  r.bits_per_dim = sum / n_images;
  for (double b : r.per_image) sum_sq += (b - r.bits_per_dim) * (b - r.bits_per_dim);
  r.standard_error = n_images > 1 ? std::sqrt(sum_sq / (n_images - 1) / n_images) : 0.0;
  return r;
}

}  // namespace ddpm
