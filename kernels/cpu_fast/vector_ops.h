// Small loops the fast CPU kernels share, written for the compiler to vectorise (this path
// is built with -O3 and the running machine's instruction set; the reference is not).
#pragma once

#include <cstdint>

namespace ddpm::cpu_fast {

// y[i] += x[i], i < n, in parallel.
void add_into(float* y, const float* x, int64_t n);
// out[c] += sum over r of m[r * cols + c]: rows cut into as many fixed chunks as threads, the
// chunks' sums added in order, so the result depends on the thread count only.
void add_column_sums(float* out, const float* m, int64_t rows, int64_t cols);

}  // namespace ddpm::cpu_fast
