// Stands in for the CUDA toolkit's cuda.h (the driver API) under the CPU emulation: only the
// tensor-map types that kernels/cuda/tensor_map.cu names. The driver function itself is
// reached, as on a GPU, through cudaGetDriverEntryPointByVersion (runtime.h), which hands
// out the emulation's encoder (tests/cuda_emulation/tensor_map.h).
#pragma once

#include "tests/cuda_emulation/tensor_map.h"
