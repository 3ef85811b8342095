// Self-attention on the CPU with its products in oneDNN's sgemm (kernels/cpu_fast/gemm.h):
// the fast float path beside the reference kernels/cpu/attention.h, with the same contract
// (packed qkv (B, L, 3C), out (B, L, C), lse (B, H, L); backward recomputes P from lse and
// accumulates into dqkv).
//
// Per (batch, head): S = scale q k^T (an L x L GEMM reading q and k in place: their rows are
// 3C apart), a row softmax that saves the log-sum-exp, out = P v (a GEMM writing straight into
// the head's columns of out). Backward: dv += P^T dout, dP = dout v^T, dS = P (dP - rowsum(P dP))
// scale, dq += dS k, dk += dS^T q. The (batch, head) pairs are split across threads (each
// GEMM single-threaded) when there are enough of them, otherwise each GEMM uses all threads.
// Every thread owns its L x L buffers and each pair's outputs: deterministic for a given
// thread count.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu_fast {

void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse);
void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv);

}  // namespace ddpm::cpu_fast
