// CUDA multi-head self-attention, four versions side by side, same contract as
// kernels/cpu/attention.h (f32; forward writes out and lse, backward accumulates into dqkv,
// or writes it outright with GradWrite::Assign: kernels/grad_write.h):
//   attention.cu             straightforward: scores, softmax and the value product as
//                            separate steps, the L x L matrix in a caller-provided workspace;
//   attention_fused.cu       fused: online softmax, the L x L matrix never leaves the chip;
//   attention_flash_bf16.cu  the fused forward on bf16 tensor cores (mma.sync), one warp per
//                            16 query rows, S and P in registers; its backward in
//                            attention_flash_bf16_backward.cu; the same forward on Hopper's
//                            wgmma in attention_flash_wgmma.cu;
//   attention_gemm.cu        the straightforward steps on cuBLAS's GEMMs, on bf16 activations
//                            (tensor cores) or fp32 ones (SGEMM; P kept or recomputed).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// Workspace: B * heads * L * L floats for the forward, twice that for the backward.
void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                       float* workspace);
void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv, float* workspace,
                        GradWrite dqkv_write = GradWrite::Accumulate);

// Fused: no L x L workspace. The backward needs the forward's output and a buffer of
// B * heads * L floats (delta). B * heads must be at most 65535 (the grid's y extent).
void attention_fused_forward(const AttentionShape& s, const float* qkv, float* out, float* lse);
void attention_fused_backward(const AttentionShape& s, const float* qkv, const float* out,
                              const float* lse, const float* dout, float* dqkv, float* delta,
                              GradWrite dqkv_write = GradWrite::Accumulate);

// delta (B * heads * L) = rowsum(dout * out) per head: the first step of both backwards.
void attention_delta(const AttentionShape& s, const float* out, const float* dout, float* delta);
void attention_delta(const AttentionShape& s, const uint16_t* out, const uint16_t* dout,
                     float* delta);

// bf16 flash: q, k, v, dout and the P / dS operands rounded to bf16, fp32 softmax statistics
// and accumulators. Head dims 32, 64, 128, 256 (supports()); sm_80 or later; qkv and dout
// 16-byte aligned. The backward accumulates into dqkv, like the others, and needs delta
// (B * heads * L floats) as scratch.
bool attention_flash_bf16_supports(const AttentionShape& s);
void attention_flash_bf16_forward(const AttentionShape& s, const float* qkv, float* out,
                                  float* lse);
void attention_flash_bf16_backward(const AttentionShape& s, const float* qkv, const float* out,
                                   const float* lse, const float* dout, float* dqkv,
                                   float* delta, GradWrite dqkv_write = GradWrite::Accumulate);
// The same on bf16 activations (bits): qkv, out, dout and dqkv bf16, read as they are; out
// rounded once as stored, dqkv = bf16(float(dqkv) + the fp32 sums); lse and delta fp32.
// qkv and dout 8-byte aligned.
//
// ds: null, or a buffer of attention_flash_bf16_ds_elements(s) bf16 (16-byte aligned) for dq
// by GEMM: the dk/dv kernel then also stores dS (rounded as its own products use it) there,
// and dq = dS k is cuBLAS's batched GEMM instead of the dq kernel, which computes S, P, dP
// and dS all over again (3 of the backward's 7 tensor-core products). It pays while dS is
// at most twice the size of qkv, L <= 6 d (attention_flash_bf16_dq_by_gemm_pays): the two
// products it saves (S and dP again) are d FLOPs per byte of dS written and read back. Deterministic
// either way (cuBLAS sums each product in a fixed order).
void attention_flash_bf16_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                                  float* lse);
void attention_flash_bf16_backward(const AttentionShape& s, const uint16_t* qkv,
                                   const uint16_t* out, const float* lse, const uint16_t* dout,
                                   uint16_t* dqkv, float* delta,
                                   GradWrite dqkv_write = GradWrite::Accumulate,
                                   uint16_t* ds = nullptr);
bool attention_flash_bf16_dq_by_gemm_pays(const AttentionShape& s);
// The forward on Hopper's wgmma (attention_flash_wgmma.cu), on bf16 activations: the same
// contract and numbers as the bf16 forward above (q, k, v as they are, P rounded to bf16,
// fp32 statistics and sums), its sums in another order. Head dims 64, 128, 256 and C a
// multiple of 8 (supports()); qkv 16-byte aligned; needs gemm_sm90_available() (an H100 or
// H200 and a build with sm_90a code), and refuses, saying which, without it.
bool attention_flash_wgmma_supports(const AttentionShape& s);
void attention_flash_wgmma_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                                   float* lse);
// Its backward (attention_flash_wgmma_backward.cu): the dk/dv kernel on wgmma, storing dS^T
// in `ds` (attention_flash_bf16_ds_elements(s) bf16, 16-byte aligned: required), then dq by
// cuBLAS's GEMM from it, as the bf16 backward with dq by GEMM; delta (B * heads * L floats)
// is scratch. qkv and dout 16-byte aligned. The same shapes and device as the forward.
void attention_flash_wgmma_backward(const AttentionShape& s, const uint16_t* qkv,
                                    const uint16_t* out, const float* lse, const uint16_t* dout,
                                    uint16_t* dqkv, float* delta, uint16_t* ds,
                                    GradWrite dqkv_write = GradWrite::Accumulate);
int64_t attention_flash_bf16_ds_elements(const AttentionShape& s);

// Through library GEMMs (attention_gemm.cu): S, P, dP and dS in memory, the five products
// by cuBLAS (sums in fp32), softmax and dS by row kernels. Two storages: bf16 activations
// (qkv, out, dout, dqkv, P and dS bf16; bf16 operands on tensor cores) and fp32 (every
// operand fp32, SGEMM without TF32). The forward writes out, lse (unless null: the backward
// does not read it) and P (attention_gemm_matrix_elements: kept for the backward), with
// `scores` (as many floats) as scratch; the backward takes that P, and dp (floats) and ds
// of the same size as scratch. fp32: p may be scores, and ds may be dp (one buffer each).
// bf16: head dims multiples of 8.
// Faster than the flash pair on bf16 activations where the matrices are small next to the
// products: head dims of 128 and up at L <= 6 d (attention_gemm_bf16_pays; why in the .cu).
// In fp32, predicted several times faster than the fused fp32 kernel at any shape (its dot
// products on the CUDA cores): the op's choice in fp32 math, with P kept where the batch's
// matrices are at most twice qkv's size, L <= 6 d (attention_gemm_fp32_keeps_p; why in the
// .cu), and recomputed past that (below).
bool attention_gemm_bf16_pays(const AttentionShape& s);
bool attention_gemm_fp32_keeps_p(const AttentionShape& s);
int64_t attention_gemm_matrix_elements(const AttentionShape& s);
void attention_gemm_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                            float* lse, uint16_t* p, float* scores);
void attention_gemm_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                            float* p, float* scores);
void attention_gemm_backward(const AttentionShape& s, const uint16_t* qkv, const uint16_t* p,
                             const uint16_t* dout, uint16_t* dqkv, float* dp, uint16_t* ds,
                             GradWrite dqkv_write = GradWrite::Accumulate);
void attention_gemm_backward(const AttentionShape& s, const float* qkv, const float* p,
                             const float* dout, float* dqkv, float* dp, float* ds,
                             GradWrite dqkv_write = GradWrite::Accumulate);

// fp32 with P recomputed: the batch in chunks of `chunk` samples (the last may be shorter),
// each chunk's matrices in scratch of chunk * heads * L * L floats that the next chunk
// reuses. The forward writes out and lse (unless null) from `scratch`; the backward needs
// nothing of the forward but qkv: it runs each chunk's S products and softmax again into p
// (the forward's bits of P) and takes dp (as large, another buffer) for dP and dS. The op
// takes it where L > 6 d, in chunks of attention_gemm_fp32_chunk(s) samples: as many as
// keep a chunk's matrices within twice qkv's size (6 B d / L), at least one.
int64_t attention_gemm_fp32_chunk(const AttentionShape& s);
void attention_gemm_recompute_forward(const AttentionShape& s, int64_t chunk, const float* qkv,
                                      float* out, float* lse, float* scratch);
void attention_gemm_recompute_backward(const AttentionShape& s, int64_t chunk, const float* qkv,
                                       const float* dout, float* dqkv, float* p, float* dp,
                                       GradWrite dqkv_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
