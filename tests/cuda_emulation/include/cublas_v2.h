// Stands in for the CUDA toolkit's cublas_v2.h under the CPU emulation.
#pragma once

#include "tests/cuda_emulation/cublas.h"
