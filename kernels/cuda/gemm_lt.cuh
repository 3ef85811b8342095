// A product and its bias in one cuBLASLt call: D = A B + bias, the bias added to each row of
// the column-major D (each output feature of a linear layer: linear.cu) in the library's
// epilogue, in fp32, before D's single store. Without it a layer's output goes through memory
// three times (the product's fp32 store, then a pass that reads it, adds the bias and stores
// y); with it once, in y's own type. cuBLASLt takes the bias in D's type (cublasLt.h on
// CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE): an fp32 bias for an fp32 D, a bf16 one for a bf16 D.
//
// Each problem (its sizes, types and the pointers' alignments) is planned once: descriptors
// made and cuBLASLt's heuristics asked for an algorithm that needs no workspace (so the call
// needs nothing allocated, inside a CUDA graph's capture too, and sums in the same order at
// every call, for bit-for-bit resumes). Where the heuristics find none, gemm_bias says so
// and the caller runs its two-pass path; a line says so for each such problem.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ddpm::cuda::lt {

enum class Operands { F32, Tf32, Bf16 };  // fp32 (no TF32), TF32-rounded fp32, bf16 bits

// D (m x n, ld m) = A (m x k, ld m) B (k x n, ld k) + bias (m), column-major, none
// transposed; A and B of `operands`' type, D and the bias fp32 (d_bf16 false) or bf16 bits.
struct BiasGemm {
  int64_t m, n, k;
  Operands operands;
  bool d_bf16;
};

// Runs it and returns true; or returns false having run nothing, when cuBLASLt has no
// algorithm for it (or the epilogue is switched off below).
bool gemm_bias(const BiasGemm& g, const void* a, const void* b, const void* bias, void* d);

// On (the default): gemm_bias runs what cuBLASLt can. Off: it runs nothing, so the callers
// take their two-pass paths (kernel-bench's "GEMM, then the bias pass" rows).
void set_bias_epilogue(bool on);
bool bias_epilogue();

}  // namespace ddpm::cuda::lt
