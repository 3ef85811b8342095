// CUDA multi-head self-attention, the straightforward version (scores, softmax and the
// value product as separate steps, the L x L matrix in a caller-provided workspace); same
// contract as kernels/cpu/attention.h (f32; forward writes out and lse, backward
// accumulates into dqkv). The fused online-softmax version is the next step (part 2).
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

// Workspace: B * heads * L * L floats for the forward, twice that for the backward.
void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                       float* workspace);
void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv, float* workspace);

}  // namespace ddpm::cuda
