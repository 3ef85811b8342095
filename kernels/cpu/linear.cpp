#include "kernels/cpu/linear.h"

#include <algorithm>

#include "kernels/cpu/gemm.h"

namespace ddpm::cpu {

namespace {
// Rows of the output per OpenMP task: enough work per task to amortise scheduling.
constexpr int64_t kRowBlock = 16;
}  // namespace

template <class T>
void linear_forward(const LinearShape& s, const T* x, const T* w, const T* b, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t r0 = 0; r0 < s.m; r0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, s.m - r0);
    for (int64_t i = r0; i < r0 + rows; ++i)
      for (int64_t j = 0; j < s.n; ++j) y[i * s.n + j] = b ? b[j] : T(0);
    gemm_acc<T>(false, false, rows, s.n, s.k, T(1), x + r0 * s.k, s.k, w, s.n, y + r0 * s.n, s.n);
  }
}

template <class T>
void linear_backward(const LinearShape& s, const T* x, const T* w, const T* dy, T* dx, T* dw,
                     T* db) {
  if (dx) {  // dx (M, K) += dy (M, N) w^T
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < s.m; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, s.m - r0);
      gemm_acc<T>(false, true, rows, s.k, s.n, T(1), dy + r0 * s.n, s.n, w, s.n, dx + r0 * s.k,
                  s.k);
    }
  }
  if (dw) {  // dw (K, N) += x^T dy: each task owns a block of dw's rows
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < s.k; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, s.k - r0);
      gemm_acc<T>(true, false, rows, s.n, s.m, T(1), x + r0, s.k, dy, s.n, dw + r0 * s.n, s.n);
    }
  }
  if (db) {
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) db[j] += dy[i * s.n + j];
  }
}

template void linear_forward<float>(const LinearShape&, const float*, const float*, const float*,
                                    float*);
template void linear_forward<double>(const LinearShape&, const double*, const double*,
                                     const double*, double*);
template void linear_backward<float>(const LinearShape&, const float*, const float*,
                                     const float*, float*, float*, float*);
template void linear_backward<double>(const LinearShape&, const double*, const double*,
                                      const double*, double*, double*, double*);

}  // namespace ddpm::cpu
