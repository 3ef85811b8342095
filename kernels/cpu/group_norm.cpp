#include "kernels/cpu/group_norm.h"

#include <cmath>

namespace ddpm::cpu {

template <class T>
void group_norm_forward(const GroupNormShape& s, const T* x, const T* gamma, const T* beta, T* y,
                        T* mean, T* rstd) {
  const int64_t cg = s.channels_per_group();
  const double count = static_cast<double>(s.s * cg);
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < s.n * s.groups; ++ng) {
    const int64_t n = ng / s.groups, c0 = (ng % s.groups) * cg;
    const T* xs = x + n * s.s * s.c + c0;  // group's first channel of pixel 0
    double sum = 0;
    for (int64_t p = 0; p < s.s; ++p)
      for (int64_t c = 0; c < cg; ++c) sum += xs[p * s.c + c];
    const double mu = sum / count;
    double sq = 0;
    for (int64_t p = 0; p < s.s; ++p)
      for (int64_t c = 0; c < cg; ++c) {
        const double d = xs[p * s.c + c] - mu;
        sq += d * d;
      }
    const double r = 1.0 / std::sqrt(sq / count + static_cast<double>(s.eps));
    mean[ng] = static_cast<T>(mu);
    rstd[ng] = static_cast<T>(r);
    T* ys = y + n * s.s * s.c + c0;
    for (int64_t p = 0; p < s.s; ++p)
      for (int64_t c = 0; c < cg; ++c)
        ys[p * s.c + c] =
            static_cast<T>((xs[p * s.c + c] - mu) * r) * gamma[c0 + c] + beta[c0 + c];
  }
}

template <class T>
void group_norm_backward(const GroupNormShape& s, const T* x, const T* gamma, const T* mean,
                         const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  const int64_t cg = s.channels_per_group();
  const double count = static_cast<double>(s.s * cg);
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < s.n * s.groups; ++ng) {
      const int64_t n = ng / s.groups, c0 = (ng % s.groups) * cg;
      const int64_t base = n * s.s * s.c + c0;
      const double mu = mean[ng], r = rstd[ng];
      double sum_g = 0, sum_g_xhat = 0;
      for (int64_t p = 0; p < s.s; ++p)
        for (int64_t c = 0; c < cg; ++c) {
          const int64_t i = base + p * s.c + c;
          const double g = static_cast<double>(dy[i]) * gamma[c0 + c];
          sum_g += g;
          sum_g_xhat += g * (x[i] - mu) * r;
        }
      const double mean_g = sum_g / count, mean_g_xhat = sum_g_xhat / count;
      for (int64_t p = 0; p < s.s; ++p)
        for (int64_t c = 0; c < cg; ++c) {
          const int64_t i = base + p * s.c + c;
          const double g = static_cast<double>(dy[i]) * gamma[c0 + c];
          const double xhat = (x[i] - mu) * r;
          dx[i] += static_cast<T>(r * (g - mean_g - xhat * mean_g_xhat));
        }
    }
  }
  if (dgamma || dbeta) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t g = c / cg;
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t n = 0; n < s.n; ++n) {
        const double mu = mean[n * s.groups + g], r = rstd[n * s.groups + g];
        for (int64_t p = 0; p < s.s; ++p) {
          const int64_t i = (n * s.s + p) * s.c + c;
          sum_dy += dy[i];
          sum_dy_xhat += static_cast<double>(dy[i]) * (x[i] - mu) * r;
        }
      }
      if (dgamma) dgamma[c] += static_cast<T>(sum_dy_xhat);
      if (dbeta) dbeta[c] += static_cast<T>(sum_dy);
    }
  }
}

template <class T>
void group_norm_silu_forward(const GroupNormShape& s, const T* x, const T* gamma, const T* beta,
                             T* y, T* mean, T* rstd) {
  group_norm_forward<T>(s, x, gamma, beta, y, mean, rstd);
  const int64_t n = s.n * s.s * s.c;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] / (T(1) + std::exp(-y[i]));
}

template <class T>
void group_norm_silu_dh(const GroupNormShape& s, const T* x, const T* gamma, const T* beta,
                        const T* mean, const T* rstd, const T* dy, T* dh) {
  const int64_t cg = s.channels_per_group();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.n * s.s; ++row) {
    const int64_t n = row / s.s;
    for (int64_t c = 0; c < s.c; ++c) {
      const int64_t i = row * s.c + c, g = n * s.groups + c / cg;
      const T h = static_cast<T>((x[i] - mean[g]) * rstd[g]) * gamma[c] + beta[c];
      const T sig = T(1) / (T(1) + std::exp(-h));
      dh[i] = dy[i] * sig * (T(1) + h * (T(1) - sig));
    }
  }
}

#define INSTANTIATE_GN_SILU(T)                                                                 \
  template void group_norm_silu_forward<T>(const GroupNormShape&, const T*, const T*, const T*, \
                                           T*, T*, T*);                                        \
  template void group_norm_silu_dh<T>(const GroupNormShape&, const T*, const T*, const T*,      \
                                      const T*, const T*, const T*, T*);
INSTANTIATE_GN_SILU(float)
INSTANTIATE_GN_SILU(double)

template void group_norm_forward<float>(const GroupNormShape&, const float*, const float*,
                                        const float*, float*, float*, float*);
template void group_norm_forward<double>(const GroupNormShape&, const double*, const double*,
                                         const double*, double*, double*, double*);
template void group_norm_backward<float>(const GroupNormShape&, const float*, const float*,
                                         const float*, const float*, const float*, float*,
                                         float*, float*);
template void group_norm_backward<double>(const GroupNormShape&, const double*, const double*,
                                          const double*, const double*, const double*, double*,
                                          double*, double*);

}  // namespace ddpm::cpu
