#include "tests/cuda_emulation/cublas.h"

#include <cstdint>

#include "tests/cuda_emulation/column_major_gemm.h"

struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cudaStream_t stream = nullptr;  // cublasSetStream's; products on it are noted (runtime.h)
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

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {

// cuBLAS's product on the handle's stream (column_major_gemm.h)
template <class T, class O = float>
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                    int m, int n, int k, float alpha, const T* A, int lda, const T* B, int ldb,
                    float beta, O* C, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  return cuda_emu::gemm_detail::gemm(handle->stream, transa, transb, m, n, k, alpha, A, lda, B,
                                     ldb, beta, C, ldc);
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm(handle, transa, transb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
  // cuBLAS's table for CUBLAS_COMPUTE_32F: fp32 A, B, C; bf16 A, B with an fp32 or bf16 C
  if (Atype != Btype || computeType != CUBLAS_COMPUTE_32F ||
      (Atype != CUDA_R_32F && Atype != CUDA_R_16BF) || (Ctype != CUDA_R_32F && Ctype != Atype))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  float* c = static_cast<float*>(C);
  if (Ctype == CUDA_R_16BF)
    return gemm(handle, transa, transb, m, n, k, a, static_cast<const uint16_t*>(A), lda,
                static_cast<const uint16_t*>(B), ldb, b, static_cast<uint16_t*>(C), ldc);
  if (Atype == CUDA_R_16BF)
    return gemm(handle, transa, transb, m, n, k, a, static_cast<const uint16_t*>(A), lda,
                static_cast<const uint16_t*>(B), ldb, b, c, ldc);
  return gemm(handle, transa, transb, m, n, k, a, static_cast<const float*>(A), lda,
              static_cast<const float*>(B), ldb, b, c, ldc);
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType Atype, int lda, long long strideA,
    const void* B, cudaDataType Btype, int ldb, long long strideB, const void* beta, void* C,
    cudaDataType Ctype, int ldc, long long strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (Atype != Btype || computeType != CUBLAS_COMPUTE_32F ||
      (Atype != CUDA_R_32F && Atype != CUDA_R_16BF) || (Ctype != CUDA_R_32F && Ctype != Atype))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const size_t in = Atype == CUDA_R_16BF ? 2 : 4, out = Ctype == CUDA_R_16BF ? 2 : 4;
  for (int i = 0; i < batchCount; ++i) {  // each product as GemmEx's, one after the other
    const void* Ai = static_cast<const char*>(A) + i * strideA * static_cast<long long>(in);
    const void* Bi = static_cast<const char*>(B) + i * strideB * static_cast<long long>(in);
    void* Ci = static_cast<char*>(C) + i * strideC * static_cast<long long>(out);
    cublasStatus_t s;
    if (Atype == CUDA_R_32F)
      s = gemm(handle, transa, transb, m, n, k, a, static_cast<const float*>(Ai), lda,
               static_cast<const float*>(Bi), ldb, b, static_cast<float*>(Ci), ldc);
    else if (Ctype == CUDA_R_32F)
      s = gemm(handle, transa, transb, m, n, k, a, static_cast<const uint16_t*>(Ai), lda,
               static_cast<const uint16_t*>(Bi), ldb, b, static_cast<float*>(Ci), ldc);
    else
      s = gemm(handle, transa, transb, m, n, k, a, static_cast<const uint16_t*>(Ai), lda,
               static_cast<const uint16_t*>(Bi), ldb, b, static_cast<uint16_t*>(Ci), ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
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
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
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
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
  }
  return "unknown status";
}
