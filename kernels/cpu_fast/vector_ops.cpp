#include "kernels/cpu_fast/vector_ops.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace ddpm::cpu_fast {

void add_into(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_column_sums(float* out, const float* m, int64_t rows, int64_t cols) {
  const int chunks = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(rows)));
  std::vector<float> partial(static_cast<size_t>(chunks * cols), 0.0f);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    float* acc = partial.data() + c * cols;
    for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) {
      const float* row = m + r * cols;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) acc[j] += row[j];
    }
  }
  for (int c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < cols; ++j) out[j] += partial[c * cols + j];
}

double sum_of_squares(int64_t n, const float* x) {
  const int64_t chunks = (n + kSquaresChunk - 1) / kSquaresChunk;
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kSquaresChunk);
    double acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = c * kSquaresChunk; i < end; ++i) acc += static_cast<double>(x[i]) * x[i];
    partial[static_cast<size_t>(c)] = acc;
  }
  double total = 0;
  for (const double p : partial) total += p;
  return total;
}

}  // namespace ddpm::cpu_fast
