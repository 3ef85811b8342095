// The product the emulated cuBLAS (cublas.cpp) and cuBLASLt (cublaslt.cpp) compute, with
// cuBLAS's argument checks: D (m x n, column-major) = alpha op(A) op(B) + beta C, the sums in
// double, rounded to float, then a bias of D's type added per row in fp32 (cuBLASLt's
// CUBLASLT_EPILOGUE_BIAS), and the value stored once in D's type (bf16: to nearest even).
// C is D (ld ldc) here: both libraries' calls that the engine makes write in place.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/cublas.h"

namespace cuda_emu::gemm_detail {

inline float element(const float* p, size_t i) { return p[i]; }
inline float element(const uint16_t* p, size_t i) { return ddpm::float_from_bf16_bits(p[i]); }
inline void put(float* p, size_t i, float v) { p[i] = v; }
inline void put(uint16_t* p, size_t i, float v) { p[i] = ddpm::bf16_bits_from_float(v); }

// Operands of element type T (float or bf16 bits), C / D and the bias of type O; the product
// runs on `stream` now, or is recorded by a capture of it and run by each launch of its graph
// (library calls are captured like kernels on a GPU). bias: null, or m elements.
template <class T, class O>
cublasStatus_t gemm(cudaStream_t stream, cublasOperation_t transa, cublasOperation_t transb,
                    int m, int n, int k, float alpha, const T* A, int lda, const T* B, int ldb,
                    float beta, O* C, int ldc, const O* bias = nullptr) {
  note_stream(stream);
  // cuBLAS's rules: the leading dimension covers the stored rows of each operand.
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  // Every operand the product reads must be device memory, whole.
  const int a_cols = transa == CUBLAS_OP_N ? k : m, b_cols = transb == CUBLAS_OP_N ? n : k;
  auto extent = [](int ld, int rows, int cols, size_t bytes) {
    return (static_cast<size_t>(cols - 1) * ld + rows) * bytes;
  };
  if ((k > 0 && (!device_accessible(A, extent(lda, a_rows, a_cols, sizeof(T))) ||
                 !device_accessible(B, extent(ldb, b_rows, b_cols, sizeof(T))))) ||
      !device_accessible(C, extent(ldc, m, n, sizeof(O))) ||
      (bias && !device_accessible(bias, m * sizeof(O))))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  const auto product = [=] {
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        double acc = 0;
        for (int p = 0; p < k; ++p) {
          const float a = transa == CUBLAS_OP_N ? element(A, i + static_cast<size_t>(p) * lda)
                                                : element(A, p + static_cast<size_t>(i) * lda);
          const float b = transb == CUBLAS_OP_N ? element(B, p + static_cast<size_t>(j) * ldb)
                                                : element(B, j + static_cast<size_t>(p) * ldb);
          acc += static_cast<double>(a) * b;
        }
        const size_t at = i + static_cast<size_t>(j) * ldc;
        // beta = 0 must not read C (it may hold NaNs, as fresh device memory does here)
        float v = static_cast<float>(
            alpha * acc + (beta == 0.0f ? 0.0 : static_cast<double>(beta) * element(C, at)));
        if (bias) v += element(bias, static_cast<size_t>(i));
        put(C, at, v);
      }
    }
  };
  if (!captured(stream, product)) product();
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace cuda_emu::gemm_detail
