// Stands in for cuDNN's cudnn.h under the CPU emulation (the legacy convolution API only).
#pragma once

#include "tests/cuda_emulation/cudnn.h"
