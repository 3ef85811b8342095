// Stands in for the CUDA toolkit's mma.h (WMMA) under the CPU emulation.
#pragma once

#include "tests/cuda_emulation/wmma.h"
