#include "kernels/cpu/random.h"

#include <cmath>

#include "engine/philox.h"

namespace ddpm::cpu {

void normal_fill(int64_t n, uint64_t seed, uint64_t stream, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = philox_normal(seed, stream, static_cast<uint64_t>(i));
}

void uniform_fill(int64_t n, uint64_t seed, uint64_t stream, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = philox_uniform(seed, stream, static_cast<uint64_t>(i));
}

template <class T>
void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const T* x, T* y) {
  const T keep_scale = T(1) / (T(1) - static_cast<T>(p));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, stream, static_cast<uint64_t>(i)) >= p;
    y[i] = keep ? x[i] * keep_scale : T(0);
  }
}

template <class T>
void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const T* dy, T* dx) {
  const T keep_scale = T(1) / (T(1) - static_cast<T>(p));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (philox_uniform(seed, stream, static_cast<uint64_t>(i)) >= p) dx[i] += dy[i] * keep_scale;
  }
}

template <class T>
void timestep_embedding(int64_t n, int64_t dim, const T* t, T* y) {
  const int64_t half = dim / 2;
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < half; ++i) {
      const double arg = static_cast<double>(t[b]) * std::exp(-step * static_cast<double>(i));
      y[b * dim + i] = static_cast<T>(std::sin(arg));
      y[b * dim + half + i] = static_cast<T>(std::cos(arg));
    }
  }
}

#define INSTANTIATE(T)                                                                      \
  template void dropout_forward<T>(int64_t, float, uint64_t, uint64_t, const T*, T*);       \
  template void dropout_backward<T>(int64_t, float, uint64_t, uint64_t, const T*, T*);      \
  template void timestep_embedding<T>(int64_t, int64_t, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace ddpm::cpu
