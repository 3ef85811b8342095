// Stands in for the CUDA toolkit's cuda_runtime.h when kernels/cuda/*.cu and the engine are
// compiled as host C++ for the CPU emulation (tests/cuda_emulation/README.md).
#pragma once

#include "tests/cuda_emulation/builtins.h"
#include "tests/cuda_emulation/runtime.h"
