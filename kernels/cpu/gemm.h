// The one matrix-multiply loop nest the CPU reference kernels share (linear, conv2d,
// attention). Row-major, with leading dimensions so callers can multiply sub-blocks in place
// (a row segment of an NHWC image, one head's columns of a packed qkv matrix).
//
//   C (M x N, ldc) += alpha * op(A) (M x K) * op(B) (K x N)
//   op(A) = A (M x K, lda)  or, trans_a, A^T with A stored (K x M, lda); likewise B.
//
// Loop order keeps the innermost loop contiguous: for B not transposed it is an axpy over a
// row of C (vectorises without reassociation); for B transposed it is a dot product over K,
// vectorised with an OpenMP simd reduction. Each C element is summed in a fixed order, so
// results do not depend on the thread count. Serial: callers parallelise over blocks of C.
#pragma once

#include <cstdint>

namespace ddpm::cpu {

template <class T>
void gemm_acc(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  if (!trans_b) {
    for (int64_t i = 0; i < m; ++i) {
      T* c_row = c + i * ldc;
      for (int64_t p = 0; p < k; ++p) {
        const T av = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
        const T* b_row = b + p * ldb;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) c_row[j] += av * b_row[j];
      }
    }
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const T* b_row = b + j * ldb;
      T acc = 0;
      if (!trans_a) {
        const T* a_row = a + i * lda;
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < k; ++p) acc += a_row[p] * b_row[p];
      } else {
        for (int64_t p = 0; p < k; ++p) acc += a[p * lda + i] * b_row[p];
      }
      c[i * ldc + j] += alpha * acc;
    }
  }
}

}  // namespace ddpm::cpu
