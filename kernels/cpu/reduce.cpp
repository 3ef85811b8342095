#include "kernels/cpu/reduce.h"

namespace ddpm::cpu {

template <class T>
void sum_forward(int64_t n, T scale, const T* x, T* y) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  y[0] = static_cast<T>(acc * scale);
}

template <class T>
void sum_backward(int64_t n, T scale, const T* dy, T* dx) {
  const T g = scale * dy[0];
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] += g;
}

template <class T>
void mse_forward(int64_t n, const T* pred, const T* target, T* y) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(pred[i]) - target[i];
    acc += d * d;
  }
  y[0] = static_cast<T>(acc / static_cast<double>(n));
}

template <class T>
void mse_backward(int64_t n, const T* pred, const T* target, const T* dy, T* dpred, T* dtarget) {
  const T k = T(2) / static_cast<T>(n) * dy[0];
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = k * (pred[i] - target[i]);
    if (dpred) dpred[i] += g;
    if (dtarget) dtarget[i] -= g;
  }
}

template <class T>
void mse_per_sample_forward(int64_t n, int64_t inner, const T* pred, const T* target, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < n; ++s) {
    double acc = 0;
    for (int64_t i = s * inner; i < (s + 1) * inner; ++i) {
      const double d = static_cast<double>(pred[i]) - target[i];
      acc += d * d;
    }
    y[s] = static_cast<T>(acc / static_cast<double>(inner));
  }
}

template <class T>
void mse_per_sample_backward(int64_t n, int64_t inner, const T* pred, const T* target,
                             const T* dy, T* dpred, T* dtarget) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < n; ++s) {
    const T k = T(2) / static_cast<T>(inner) * dy[s];
    for (int64_t i = s * inner; i < (s + 1) * inner; ++i) {
      const T g = k * (pred[i] - target[i]);
      if (dpred) dpred[i] += g;
      if (dtarget) dtarget[i] -= g;
    }
  }
}

#define INSTANTIATE(T)                                                          \
  template void sum_forward<T>(int64_t, T, const T*, T*);                       \
  template void sum_backward<T>(int64_t, T, const T*, T*);                      \
  template void mse_forward<T>(int64_t, const T*, const T*, T*);                \
  template void mse_backward<T>(int64_t, const T*, const T*, const T*, T*, T*);       \
  template void mse_per_sample_forward<T>(int64_t, int64_t, const T*, const T*, T*); \
  template void mse_per_sample_backward<T>(int64_t, int64_t, const T*, const T*, const T*, T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace ddpm::cpu
