// CUDA_CHECK, CUBLAS_CHECK: run a CUDA/cuBLAS call, and on failure throw ddpm::Error naming
// the status, the expression, the file and the line. Include only from code compiled with
// the CUDA toolkit (DDPM_WITH_CUDA) or its CPU emulation (tests/cuda_emulation); cuDNN's
// check is in engine/cudnn_check.h. Kernel launches are checked by DDPM_LAUNCH
// (kernels/cuda/launch.cuh).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "engine/check.h"

#define CUDA_CHECK(expr)                                                                   \
  do {                                                                                     \
    cudaError_t ddpm_status_ = (expr);                                                     \
    if (ddpm_status_ != cudaSuccess) {                                                     \
      ::ddpm::throw_error(__FILE__, __LINE__,                                              \
                          std::string("CUDA error ") + cudaGetErrorName(ddpm_status_) +    \
                              ": " + cudaGetErrorString(ddpm_status_),                     \
                          #expr);                                                          \
    }                                                                                      \
  } while (0)

namespace ddpm {
// The status's name without calling into cuBLAS: the engine loads the library only when a
// CUDA linear layer first runs (kernels/cuda/linear.cu), so this header must not need it.
inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "a cuBLAS error";
  }
}
}  // namespace ddpm

#define CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                     \
    cublasStatus_t ddpm_status_ = (expr);                                                  \
    if (ddpm_status_ != CUBLAS_STATUS_SUCCESS) {                                           \
      ::ddpm::throw_error(__FILE__, __LINE__,                                              \
                          std::string("cuBLAS error ") + ::ddpm::cublas_status_name(ddpm_status_) + \
                              " (status " + std::to_string(static_cast<int>(ddpm_status_)) + ")", \
                          #expr);                                                          \
    }                                                                                      \
  } while (0)
