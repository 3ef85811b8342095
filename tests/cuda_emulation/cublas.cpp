#include "tests/cuda_emulation/cublas.h"

#include <algorithm>

struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  // cuBLAS's rules: the leading dimension covers the stored rows of each operand.
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  // Every operand the product reads must be device memory, whole.
  const int a_cols = transa == CUBLAS_OP_N ? k : m, b_cols = transb == CUBLAS_OP_N ? n : k;
  auto extent = [](int ld, int rows, int cols) {
    return (static_cast<size_t>(cols - 1) * ld + rows) * sizeof(float);
  };
  if ((k > 0 && (!cuda_emu::device_accessible(A, extent(lda, a_rows, a_cols)) ||
                 !cuda_emu::device_accessible(B, extent(ldb, b_rows, b_cols)))) ||
      !cuda_emu::device_accessible(C, extent(ldc, m, n)))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        const float a = transa == CUBLAS_OP_N ? A[i + static_cast<size_t>(p) * lda]
                                              : A[p + static_cast<size_t>(i) * lda];
        const float b = transb == CUBLAS_OP_N ? B[p + static_cast<size_t>(j) * ldb]
                                              : B[j + static_cast<size_t>(p) * ldb];
        acc += static_cast<double>(a) * b;
      }
      float& c = C[i + static_cast<size_t>(j) * ldc];
      // beta = 0 must not read C (it may hold NaNs, as fresh device memory does here)
      c = static_cast<float>(*alpha * acc + (*beta == 0.0f ? 0.0 : static_cast<double>(*beta) * c));
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute (emulation: an operand is not device memory)";
  }
  return "unknown status";
}
