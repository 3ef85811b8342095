// `cuda_conv: auto`: per convolution shape and pass, the faster of our kernel and cuDNN in
// the precision's math (v2 or cuDNN fp32, v3 or cuDNN TF32, v4 or cuDNN bf16), timed once on
// first use and kept, like torch.backends.cudnn.benchmark. Both candidates are held to the
// CPU reference by their own tests, so either choice is a verified kernel.
#pragma once

#include "kernels/cuda/conv2d.cuh"

namespace ddpm::cuda {

enum class ConvPass { Forward, Dgrad, Wgrad };

// The candidate that ran `pass` of `s` faster: `ours` or `library` (a cuDNN algo; skipped
// when cuDNN cannot run the shape). Timed on the first call for the shape and pass: scratch
// operands, CUDA events on the engine's stream, the median of 5 runs after a warm-up; the
// times and the choice are printed. Not during a stream capture (it allocates and waits):
// a captured step's shapes were all seen by the eager steps before it.
ConvAlgo conv2d_autotuned(const Conv2dShape& s, ConvPass pass, ConvAlgo ours, ConvAlgo library);

}  // namespace ddpm::cuda
