// `cuda_conv: auto`: per convolution shape and pass, the fastest of our kernels and cuDNN's
// in the precision's math (fp32: v2, v4 on bf16x6 pieces (sm_80 and later) or cuDNN fp32;
// TF32: v4 in TF32 or cuDNN TF32; bf16: v4 or cuDNN bf16), timed once on first use and
// kept, like torch.backends.cudnn.benchmark. Every candidate is held to the CPU reference by
// its own tests, so any choice is a verified kernel.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cuda/conv2d.cuh"

namespace ddpm::cuda {

enum class ConvPass { Forward, Dgrad, Wgrad };

// What the caller's call reads, so that the timed runs read the same: the activations'
// storage (fp32, or bf16 bits: conv2d.cuh's two sets of entries) and whether the weights
// come with their bf16 copy (engine/weight_copy.h). It matters: on an H200 the same 32x32
// dgrad measured v4 0.244 ms, cuDNN 0.303 ms through the fp32 entries (cuDNN's path converts
// x and dy first) and v4 0.199 ms, cuDNN 0.079 ms on bf16 activations (kernel-bench conv,
// docs/gpu-runs/2026-12-04): timed on the wrong entries, the choice is the wrong one.
struct ConvOperands {
  bool bf16_activations = false;
  bool weight_copy = false;
};

// The candidate that ran `pass` of `s` on `operands` fastest, of `candidates` (at most
// kMaxAutotuneCandidates; a cuDNN algo among them skipped when cuDNN cannot run the shape).
// Timed on the first call for the shape, pass, operands and candidates: scratch operands of
// the same storage, each candidate's first run checked against the first candidate's
// (autotune_check.cuh; one that differs is left out), then the median of 5 runs between
// CUDA events on the engine's stream; the times and the choice are printed. Not during a
// stream capture (it allocates and waits): a captured step's shapes were all seen by the
// eager steps before it.
constexpr size_t kMaxAutotuneCandidates = 3;  // fp32's: v2, v4 on bf16x6 pieces, cuDNN
ConvAlgo conv2d_autotuned(const Conv2dShape& s, ConvPass pass, ConvOperands operands,
                          const std::vector<ConvAlgo>& candidates);

}  // namespace ddpm::cuda
