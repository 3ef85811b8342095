// CUDNN_CHECK: run a cuDNN call, and on failure throw ddpm::Error naming the status, the
// expression, the file and the line, for the tests and the benchmark, which link cuDNN
// (the baseline they compare our kernels with). The engine's own cuDNN path (`cuda_conv:
// cudnn`, kernels/cuda/conv2d_cudnn.cu) opens the library on first use and checks its calls
// there.
#pragma once

#include <cudnn.h>

#include "engine/check.h"

#define CUDNN_CHECK(expr)                                                                  \
  do {                                                                                     \
    cudnnStatus_t ddpm_status_ = (expr);                                                   \
    if (ddpm_status_ != CUDNN_STATUS_SUCCESS) {                                            \
      ::ddpm::throw_error(__FILE__, __LINE__,                                              \
                          std::string("cuDNN error: ") + cudnnGetErrorString(ddpm_status_), \
                          #expr);                                                          \
    }                                                                                      \
  } while (0)
