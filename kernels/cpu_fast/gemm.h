// The fast CPU path's matrix product: oneDNN's sgemm (dnnl_sgemm), row-major, behind one
// function the linear layers and attention call.
//
// Why oneDNN, not OpenBLAS. On this project's machines (AMD EPYC with AVX-512, 2 cores)
// Debian's OpenBLAS 0.3.21 runs its Haswell (AVX2) kernels, while oneDNN's JIT picks the
// AVX-512 ones. `cpu-bench ops` times both on the model's linear layers; measured
// 2026-12-07 (scratch program, best of 10, 2 threads; GFLOP/s OpenBLAS -> oneDNN):
// 2048 x 256 -> 768 (the CIFAR-10 attention's qkv at batch 8) 237 -> 533; 25088 x 96 -> 32
// (a fashion.json 1x1 skip) 121 -> 520; 8 x 512 -> 512 (a time MLP) 52 -> 395.
//
// Numbers. Both sum each dot product in float, in blocks whose order depends on the shapes
// and the thread count; a run with the same shapes and threads gives the same bits (the
// resume and data-parallel tests hold the engine to that). Called inside an OpenMP parallel
// region (attention's per-head loop) oneDNN runs on the calling thread alone.
#pragma once

#include <cstdint>

namespace ddpm::cpu_fast {

// Which library sgemm runs: oneDNN (the default), or OpenBLAS, kept beside it so that
// cpu-bench times the engine's step on both in the same process. Process-wide; set it
// between ops, not while one runs.
enum class GemmLibrary { OneDnn, OpenBlas };
void set_gemm_library(GemmLibrary library);
GemmLibrary gemm_library();

// C (m x n) = alpha op(A) op(B) + beta C, all row-major: op(A) is A (m x k, leading
// dimension lda) or, with trans_a, the transpose of A (k x m); op(B) is B (k x n, ldb) or,
// with trans_b, the transpose of B (n x k). beta 0 overwrites C without reading it.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

}  // namespace ddpm::cpu_fast
