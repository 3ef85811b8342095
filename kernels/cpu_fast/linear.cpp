#include "kernels/cpu_fast/linear.h"

#include <cblas.h>

#include "kernels/cpu_fast/vector_ops.h"

namespace ddpm::cpu_fast {

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y) {
  const int m = static_cast<int>(s.m), k = static_cast<int>(s.k), n = static_cast<int>(s.n);
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, x, k, w, n, 0.0f, y, n);
  if (b) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; ++i) {
      float* row = y + static_cast<int64_t>(i) * n;
#pragma omp simd
      for (int j = 0; j < n; ++j) row[j] += b[j];
    }
  }
}

void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db) {
  const int m = static_cast<int>(s.m), k = static_cast<int>(s.k), n = static_cast<int>(s.n);
  if (m == 0 || n == 0) return;
  // dx (M, K) += dy (M, N) w^T;  dw (K, N) += x^T dy
  if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, dy, n, w, n, 1.0f, dx, k);
  if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1.0f, x, k, dy, n, 1.0f, dw, n);
  if (db) add_column_sums(db, dy, m, n);
}

}  // namespace ddpm::cpu_fast
