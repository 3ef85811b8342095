#include "kernels/cpu_fast/group_norm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu_fast/fast_exp.h"

namespace ddpm::cpu_fast {

namespace {

// sums[c] = sum over the S pixels of sample n of f(i, c), i = the element's flat index, c its
// channel. f takes the channel from the loop rather than computing i % C: an integer
// division per element kept the loop from vectorising and was, at 23% of the time,
// the largest item of a fashion.json step + sampling (perf, docs/cpu-path.md).
template <class F>
void channel_sums(const GroupNormShape& s, int64_t n, std::vector<float>& sums, F f) {
  sums.assign(static_cast<size_t>(s.c), 0.0f);
  float* out = sums.data();
  for (int64_t p = 0; p < s.s; ++p) {
    const int64_t row = (n * s.s + p) * s.c;
#pragma omp simd
    for (int64_t c = 0; c < s.c; ++c) out[c] += f(row + c, c);
  }
}

// The group sums of per-channel sums.
void group_sums(const GroupNormShape& s, const std::vector<float>& per_channel, float* per_group) {
  const int64_t cg = s.channels_per_group();
  for (int64_t g = 0; g < s.groups; ++g) {
    float acc = 0.0f;
    for (int64_t c = 0; c < cg; ++c) acc += per_channel[g * cg + c];
    per_group[g] = acc;
  }
}

// Sample n's per-channel coefficients of the normalisation, y = x a + b:
// a = rstd_g gamma, b = beta - mean_g a.
void sample_coefficients(const GroupNormShape& s, int64_t n, const float* gamma,
                         const float* beta, const float* mean, const float* rstd,
                         std::vector<float>& a, std::vector<float>& b) {
  const int64_t cg = s.channels_per_group();
  a.resize(static_cast<size_t>(s.c));
  b.resize(static_cast<size_t>(s.c));
  for (int64_t c = 0; c < s.c; ++c) {
    const int64_t g = n * s.groups + c / cg;
    a[c] = rstd[g] * gamma[c];
    b[c] = beta[c] - mean[g] * a[c];
  }
}

// Sample n's group means, channel by channel: mu[c] = mean of c's group.
std::vector<float> channel_means(const GroupNormShape& s, int64_t n, const float* mean) {
  const int64_t cg = s.channels_per_group();
  std::vector<float> mu(static_cast<size_t>(s.c));
  for (int64_t c = 0; c < s.c; ++c) mu[c] = mean[n * s.groups + c / cg];
  return mu;
}

// Statistics of sample n, and its per-channel coefficients y = x a + b.
void normalise_coefficients(const GroupNormShape& s, const float* x, const float* gamma,
                            const float* beta, int64_t n, float* mean, float* rstd,
                            std::vector<float>& a, std::vector<float>& b) {
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  std::vector<float> sums, group(static_cast<size_t>(s.groups));
  channel_sums(s, n, sums, [x](int64_t i, int64_t) { return x[i]; });
  group_sums(s, sums, group.data());
  for (int64_t g = 0; g < s.groups; ++g) mean[n * s.groups + g] = group[g] / count;
  // second pass around the mean: the variance without E[x^2] - E[x]^2's cancellation
  const std::vector<float> mean_of = channel_means(s, n, mean);
  const float* mu = mean_of.data();
  channel_sums(s, n, sums, [x, mu](int64_t i, int64_t c) {
    const float d = x[i] - mu[c];
    return d * d;
  });
  group_sums(s, sums, group.data());
  for (int64_t g = 0; g < s.groups; ++g)
    rstd[n * s.groups + g] = 1.0f / std::sqrt(group[g] / count + s.eps);
  sample_coefficients(s, n, gamma, beta, mean, rstd, a, b);
}

// dh = dy silu'(h), h = x a + b per channel, over the `rows` pixel rows of one sample, and
// the channel sums group norm's backward takes from dh: sum_dh[c] += dh, sum_dhx[c] +=
// dh (x - mu[c]), pixels in order (as channel_sums). Its own function so the loop vectorises
// (inlined in the parallel region GCC did not).
void silu_grad_rows(const float* x, const float* dy, const float* a, const float* b,
                    const float* mu, int64_t rows, int64_t channels, float* dh, float* sum_dh,
                    float* sum_dhx) {
  for (int64_t p = 0; p < rows; ++p, x += channels, dy += channels, dh += channels) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const float h = x[c] * a[c] + b[c];
      const float sig = 1.0f / (1.0f + fast_exp(-h));
      const float d = dy[c] * sig * (1.0f + h * (1.0f - sig));
      dh[c] = d;
      sum_dh[c] += d;
      sum_dhx[c] += d * (x[c] - mu[c]);
    }
  }
}

// sum_g[c] += g, sum_gx[c] += g (x - mu[c]) over the `rows` pixel rows of one sample, pixels
// in order (as channel_sums), both in one pass. Its own function for the vectoriser, as above.
void gradient_sums(const float* x, const float* g, const float* mu, int64_t rows,
                   int64_t channels, float* sum_g, float* sum_gx) {
  for (int64_t p = 0; p < rows; ++p, x += channels, g += channels) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      sum_g[c] += g[c];
      sum_gx[c] += g[c] * (x[c] - mu[c]);
    }
  }
}

// dx of sample n from the channel sums of g (the gradient reaching the norm's output) and
// of g (x - mu): g gamma's mean per group m_g, g gamma xhat's m_gx (xhat = (x - mu) r), and
// dx (+)= r (g gamma - m_g - xhat m_gx) = g A + (x - mu) B + C per channel. x, g, dx:
// sample n's rows; mu: its channel_means. The sums and dx take x about its mean: with x
// itself, x B and C (each mu r^2 m_gx and more) cancel where a group's spread is small
// beside its mean, r^2 amplifying float's error (1% of dx at a variance of eps and a mean
// 100 spreads away: CpuFast.GroupNormEpsIsTheReferencesOnTightGroups).
void sample_dx(const GroupNormShape& s, int64_t n, const float* x, const float* g,
               const float* gamma, const float* mu, const float* rstd, const float* sum_g,
               const float* sum_gx, float* dx, GradWrite write) {
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  const size_t groups = static_cast<size_t>(s.groups), channels = static_cast<size_t>(s.c);
  std::vector<float> mg(groups, 0.0f), mgx(groups, 0.0f);
  for (int64_t c = 0; c < s.c; ++c) {
    const int64_t grp = c / cg, ng = n * s.groups + grp;
    mg[grp] += gamma[c] * sum_g[c];
    mgx[grp] += gamma[c] * sum_gx[c] * rstd[ng];
  }
  std::vector<float> A(channels), B(channels), C(channels);
  for (int64_t c = 0; c < s.c; ++c) {
    const int64_t grp = c / cg, ng = n * s.groups + grp;
    const float r = rstd[ng], m_g = mg[grp] / count, m_gx = mgx[grp] / count;
    A[c] = r * gamma[c];
    B[c] = -r * r * m_gx;
    C[c] = -r * m_g;
  }
  const bool add = write == GradWrite::Accumulate;
  for (int64_t p = 0; p < s.s; ++p, x += s.c, g += s.c, dx += s.c) {
    if (add) {
#pragma omp simd
      for (int64_t c = 0; c < s.c; ++c) dx[c] += g[c] * A[c] + (x[c] - mu[c]) * B[c] + C[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < s.c; ++c) dx[c] = g[c] * A[c] + (x[c] - mu[c]) * B[c] + C[c];
    }
  }
}

// dgamma += sum over samples of r sum_gx (its x about the mean), dbeta += sum of sum_g,
// samples in order: deterministic. sum_g, sum_gx: (N, C).
void parameter_grads(const GroupNormShape& s, const float* rstd, const std::vector<float>& sum_g,
                     const std::vector<float>& sum_gx, float* dgamma, float* dbeta) {
  const int64_t cg = s.channels_per_group();
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t ng = n * s.groups + c / cg;
      const float sg = sum_g[n * s.c + c], sgx = sum_gx[n * s.c + c];
      if (dbeta) dbeta[c] += sg;
      if (dgamma) dgamma[c] += rstd[ng] * sgx;
    }
}

template <bool kSilu>
void forward(const GroupNormShape& s, const float* x, const float* gamma, const float* beta,
             float* y, float* mean, float* rstd) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    std::vector<float> a, b;
    normalise_coefficients(s, x, gamma, beta, n, mean, rstd, a, b);
    for (int64_t p = 0; p < s.s; ++p) {
      const int64_t row = (n * s.s + p) * s.c;
#pragma omp simd
      for (int64_t c = 0; c < s.c; ++c) {
        const float h = x[row + c] * a[c] + b[c];
        y[row + c] = kSilu ? h / (1.0f + fast_exp(-h)) : h;
      }
    }
  }
}

}  // namespace

void group_norm_forward(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, float* y, float* mean, float* rstd) {
  forward<false>(s, x, gamma, beta, y, mean, rstd);
}

void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd) {
  forward<true>(s, x, gamma, beta, y, mean, rstd);
}

void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, GradWrite dx_write) {
  const size_t per_sample_channels = static_cast<size_t>(s.n * s.c);
  std::vector<float> sum_dy(per_sample_channels), sum_dyx(per_sample_channels);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    const int64_t first = n * s.s * s.c;
    const std::vector<float> mu = channel_means(s, n, mean);
    gradient_sums(x + first, dy + first, mu.data(), s.s, s.c, &sum_dy[n * s.c],
                  &sum_dyx[n * s.c]);
    if (dx)
      sample_dx(s, n, x + first, dy + first, gamma, mu.data(), rstd, &sum_dy[n * s.c],
                &sum_dyx[n * s.c], dx + first, dx_write);
  }
  parameter_grads(s, rstd, sum_dy, sum_dyx, dgamma, dbeta);
}

void group_norm_silu_backward(const GroupNormShape& s, const float* x, const float* gamma,
                              const float* beta, const float* mean, const float* rstd,
                              const float* dy, float* dx, float* dgamma, float* dbeta,
                              GradWrite dx_write) {
  const size_t per_sample_channels = static_cast<size_t>(s.n * s.c);
  std::vector<float> sum_dh(per_sample_channels), sum_dhx(per_sample_channels);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    std::vector<float> a, b;
    sample_coefficients(s, n, gamma, beta, mean, rstd, a, b);
    // one sample's dh: a few hundred KB at most, so the dx pass reads it from cache
    std::vector<float> dh(static_cast<size_t>(s.s * s.c));
    const int64_t first = n * s.s * s.c;
    const std::vector<float> mu = channel_means(s, n, mean);
    silu_grad_rows(x + first, dy + first, a.data(), b.data(), mu.data(), s.s, s.c, dh.data(),
                   &sum_dh[n * s.c], &sum_dhx[n * s.c]);
    if (dx)
      sample_dx(s, n, x + first, dh.data(), gamma, mu.data(), rstd, &sum_dh[n * s.c],
                &sum_dhx[n * s.c], dx + first, dx_write);
  }
  parameter_grads(s, rstd, sum_dh, sum_dhx, dgamma, dbeta);
}

}  // namespace ddpm::cpu_fast
