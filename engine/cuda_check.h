// CUDA_CHECK, CUBLAS_CHECK, CUDNN_CHECK: run a CUDA/cuBLAS/cuDNN call, and on failure throw
// ddpm::Error naming the status, the expression, the file and the line. Include only from
// code compiled with the CUDA toolkit (DDPM_WITH_CUDA).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

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
void count_kernel_launch();  // engine/device.cpp: feeds device_work_counts()
}  // namespace ddpm

// After a kernel launch: a bad configuration shows up in cudaGetLastError. Every launch in
// the engine goes through here, so it is also where launches are counted.
#define CUDA_CHECK_LAUNCH()            \
  do {                                 \
    ::ddpm::count_kernel_launch();     \
    CUDA_CHECK(cudaGetLastError());    \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                     \
    cublasStatus_t ddpm_status_ = (expr);                                                  \
    if (ddpm_status_ != CUBLAS_STATUS_SUCCESS) {                                           \
      ::ddpm::throw_error(__FILE__, __LINE__,                                              \
                          std::string("cuBLAS error ") + cublasGetStatusName(ddpm_status_) + \
                              ": " + cublasGetStatusString(ddpm_status_),                  \
                          #expr);                                                          \
    }                                                                                      \
  } while (0)

#define CUDNN_CHECK(expr)                                                                  \
  do {                                                                                     \
    cudnnStatus_t ddpm_status_ = (expr);                                                   \
    if (ddpm_status_ != CUDNN_STATUS_SUCCESS) {                                            \
      ::ddpm::throw_error(__FILE__, __LINE__,                                              \
                          std::string("cuDNN error: ") + cudnnGetErrorString(ddpm_status_), \
                          #expr);                                                          \
    }                                                                                      \
  } while (0)
