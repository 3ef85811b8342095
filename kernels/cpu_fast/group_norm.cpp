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
  std::vector<float> mean_of(static_cast<size_t>(s.c));
  for (int64_t c = 0; c < s.c; ++c) mean_of[c] = mean[n * s.groups + c / cg];
  const float* mu = mean_of.data();
  channel_sums(s, n, sums, [x, mu](int64_t i, int64_t c) {
    const float d = x[i] - mu[c];
    return d * d;
  });
  group_sums(s, sums, group.data());
  a.resize(static_cast<size_t>(s.c));
  b.resize(static_cast<size_t>(s.c));
  for (int64_t g = 0; g < s.groups; ++g)
    rstd[n * s.groups + g] = 1.0f / std::sqrt(group[g] / count + s.eps);
  for (int64_t c = 0; c < s.c; ++c) {
    a[c] = rstd[n * s.groups + c / cg] * gamma[c];
    b[c] = beta[c] - mu[c] * a[c];
  }
}

// dh = dy silu'(h), h = x a + b per channel, over `rows` pixel rows of `channels`. Its own
// function so the loop vectorises (inlined in the parallel region GCC did not).
void silu_grad_rows(const float* x, const float* dy, const float* a, const float* b,
                    int64_t rows, int64_t channels, float* dh) {
  for (int64_t p = 0; p < rows; ++p, x += channels, dy += channels, dh += channels) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const float h = x[c] * a[c] + b[c];
      const float sig = 1.0f / (1.0f + fast_exp(-h));
      dh[c] = dy[c] * sig * (1.0f + h * (1.0f - sig));
    }
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

void group_norm_silu_dh(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, const float* mean, const float* rstd, const float* dy,
                        float* dh) {
  const int64_t cg = s.channels_per_group();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    std::vector<float> a(static_cast<size_t>(s.c)), b(static_cast<size_t>(s.c));
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t g = n * s.groups + c / cg;
      a[c] = rstd[g] * gamma[c];
      b[c] = beta[c] - mean[g] * a[c];
    }
    silu_grad_rows(x + n * s.s * s.c, dy + n * s.s * s.c, a.data(), b.data(), s.s, s.c,
                   dh + n * s.s * s.c);
  }
}

void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, GradWrite dx_write) {
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  // per sample: channel sums of dy and dy x (for dgamma, dbeta and dx alike)
  std::vector<float> sum_dy(static_cast<size_t>(s.n * s.c)), sum_dyx(static_cast<size_t>(s.n * s.c));
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    std::vector<float> sums;
    channel_sums(s, n, sums, [dy](int64_t i, int64_t) { return dy[i]; });
    std::copy(sums.begin(), sums.end(), sum_dy.begin() + n * s.c);
    channel_sums(s, n, sums, [dy, x](int64_t i, int64_t) { return dy[i] * x[i]; });
    std::copy(sums.begin(), sums.end(), sum_dyx.begin() + n * s.c);
    if (!dx) continue;
    // g = dy gamma; mean_g = sum g / count; mean_gx = sum g xhat / count, xhat = (x - mu) r
    std::vector<float> mg(static_cast<size_t>(s.groups), 0.0f), mgx(static_cast<size_t>(s.groups), 0.0f);
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t g = c / cg, ng = n * s.groups + g;
      const float sdy = sum_dy[n * s.c + c], sdyx = sum_dyx[n * s.c + c];
      mg[g] += gamma[c] * sdy;
      mgx[g] += gamma[c] * (sdyx - mean[ng] * sdy) * rstd[ng];
    }
    // dx (+)= r (g - mean_g - xhat mean_gx) = dy A + x B + C per channel
    std::vector<float> A(static_cast<size_t>(s.c)), B(static_cast<size_t>(s.c)), C(static_cast<size_t>(s.c));
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t g = c / cg, ng = n * s.groups + g;
      const float r = rstd[ng], m_g = mg[g] / count, m_gx = mgx[g] / count;
      A[c] = r * gamma[c];
      B[c] = -r * r * m_gx;
      C[c] = -r * m_g + mean[ng] * r * r * m_gx;
    }
    const bool add = dx_write == GradWrite::Accumulate;
    for (int64_t p = 0; p < s.s; ++p) {
      const int64_t row = (n * s.s + p) * s.c;
      if (add) {
#pragma omp simd
        for (int64_t c = 0; c < s.c; ++c)
          dx[row + c] += dy[row + c] * A[c] + x[row + c] * B[c] + C[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < s.c; ++c) dx[row + c] = dy[row + c] * A[c] + x[row + c] * B[c] + C[c];
      }
    }
  }
  if (dgamma || dbeta) {
    for (int64_t n = 0; n < s.n; ++n)  // samples in order: deterministic
      for (int64_t c = 0; c < s.c; ++c) {
        const int64_t ng = n * s.groups + c / cg;
        const float sdy = sum_dy[n * s.c + c], sdyx = sum_dyx[n * s.c + c];
        if (dbeta) dbeta[c] += sdy;
        if (dgamma) dgamma[c] += rstd[ng] * (sdyx - mean[ng] * sdy);
      }
  }
}

}  // namespace ddpm::cpu_fast
