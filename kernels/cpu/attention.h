// CPU reference for multi-head self-attention over tokens.
//
//   qkv (B, L, 3C) packed [q | k | v]; head h reads channels [h d, (h+1) d) of each, d = C/H
//   S = q_h k_h^T * scale (L x L),  scale = 1/sqrt(d)
//   P = softmax(S) row-wise,  lse_i = log sum_j exp(S_ij)     (saved: (B, H, L))
//   out_h = P v_h  -> out (B, L, C), heads side by side
//
// Backward recomputes P = exp(S - lse) from q, k and the saved lse (as FlashAttention does,
// so no L x L matrix is kept between passes), then
//   dv += P^T dout,  dP = dout v^T,  dS = P * (dP - rowsum(P * dP)) * scale,
//   dq += dS k,      dk += dS^T q
// One OpenMP task per (batch, head) with its own L x L scratch.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T>
void attention_forward(const AttentionShape& s, const T* qkv /* (B,L,3C) */,
                       T* out /* (B,L,C) */, T* lse /* (B,H,L) */);

// Accumulates into dqkv (B, L, 3C).
template <class T>
void attention_backward(const AttentionShape& s, const T* qkv, const T* lse,
                        const T* dout /* (B,L,C) */, T* dqkv /* (B,L,3C) */);

}  // namespace ddpm::cpu
