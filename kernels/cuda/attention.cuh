// CUDA multi-head self-attention, two versions side by side, same contract as
// kernels/cpu/attention.h (f32; forward writes out and lse, backward accumulates into dqkv):
//   attention.cu        straightforward: scores, softmax and the value product as separate
//                       steps, the L x L matrix in a caller-provided workspace;
//   attention_fused.cu  fused: online softmax, the L x L matrix never leaves the chip.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

// Workspace: B * heads * L * L floats for the forward, twice that for the backward.
void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                       float* workspace);
void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv, float* workspace);

// Fused: no L x L workspace. The backward needs the forward's output and a buffer of
// B * heads * L floats (delta). B * heads must be at most 65535 (the grid's y extent).
void attention_fused_forward(const AttentionShape& s, const float* qkv, float* out, float* lse);
void attention_fused_backward(const AttentionShape& s, const float* qkv, const float* out,
                              const float* lse, const float* dout, float* dqkv, float* delta);

}  // namespace ddpm::cuda
