#include "kernels/cpu_fast/linear.h"

#include "kernels/cpu_fast/gemm.h"
#include "kernels/cpu_fast/vector_ops.h"

namespace ddpm::cpu_fast {

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y) {
  const int64_t m = s.m, k = s.k, n = s.n;
  if (m == 0 || n == 0) return;
  sgemm(false, false, m, n, k, 1.0f, x, k, w, n, 0.0f, y, n);
  if (b) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      float* row = y + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] += b[j];
    }
  }
}

void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db) {
  const int64_t m = s.m, k = s.k, n = s.n;
  if (m == 0 || n == 0) return;
  // dx (M, K) += dy (M, N) w^T;  dw (K, N) += x^T dy
  if (dx) sgemm(false, true, m, k, n, 1.0f, dy, n, w, n, 1.0f, dx, k);
  if (dw) sgemm(true, false, k, n, m, 1.0f, x, k, dy, n, 1.0f, dw, n);
  if (db) add_column_sums(db, dy, m, n);
}

}  // namespace ddpm::cpu_fast
