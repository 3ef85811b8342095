// Stands in for the CUDA toolkit's cublasLt.h under the CPU emulation.
#pragma once

#include "tests/cuda_emulation/cublaslt.h"
