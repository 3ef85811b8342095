// y (m, n) = src + b[col] + per_sample[row / pixels, col] + residual, each addend optional,
// summed in fp32 in that order and stored once in y's storage: the pass after a library's
// product that our own GEMM kernels do in their epilogues (cuBLAS's linear layer on bf16
// activations: linear.cu; cuDNN's convolution: conv2d_cudnn.cu). T: src's storage (float,
// or bf16 bits); A: y's and the residual's. src may be y itself (the same storage, in place:
// each thread reads its elements before it writes them). Internal to kernels/cuda.
//
// Two mappings, the same sums in the same order, so the same bits:
//  - runs: a thread per 8 adjacent columns (storage.cuh's runs: one 16-byte access per
//    operand for bf16, two for fp32), one division per 8 elements (by the runs in a row;
//    another by `pixels` for the per-sample addend), when every row's runs are whole and
//    every matrix's rows start on 16 bytes (rows_run);
//  - pairs: a thread per pair of adjacent columns (load_cols / store_cols, each pair one
//    access when rows_pair allows), for any n: what both passes did before, where the
//    divisions of a 64-bit index, tens of instructions each, per two elements came near the
//    ~70 instructions an element a pass moving 8 bytes an element can issue at the
//    memory's speed (docs/kernels.md, "Index arithmetic in memory-bound kernels").
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

template <class T, class A>
__global__ void row_adds_runs_kernel(int64_t m, int64_t n, int64_t pixels,
                                     const T* src,                 // (m, n)
                                     const float* b,               // (n)
                                     const float* per_sample,      // (m / pixels, n)
                                     const A* residual, A* y) {    // (m, n) each
  const int64_t runs = n / kRun;
  DDPM_GRID_STRIDE(i, m * runs) {
    const int64_t row = i / runs, col = (i - row * runs) * kRun, at = row * n + col;
    float v[kRun];
    load_run(src, at, v);
    const float* sample = per_sample ? per_sample + row / pixels * n + col : nullptr;
#pragma unroll
    for (int e = 0; e < kRun; ++e) {
      if (b) v[e] += b[col + e];
      if (sample) v[e] += sample[e];
    }
    if (residual) {
      float r[kRun];
      load_run(residual, at, r);
#pragma unroll
      for (int e = 0; e < kRun; ++e) v[e] += r[e];
    }
    store_run(y, at, v);
  }
}

template <class T, class A>
__global__ void row_adds_pairs_kernel(int64_t m, int64_t n, int64_t pixels, bool paired,
                                      const T* src,                // (m, n)
                                      const float* b,              // (n)
                                      const float* per_sample,     // (m / pixels, n)
                                      const A* residual, A* y) {   // (m, n) each
  DDPM_GRID_STRIDE(i, m * ColumnPair::pairs(n)) {
    const ColumnPair p(i, n);
    const int64_t at = p.row * n;
    float v[2], r[2];
    load_cols(src + at, p.col, p.count, paired, v);
    const float* sample = per_sample ? per_sample + p.row / pixels * n : nullptr;
    for (int e = 0; e < p.count; ++e) {
      if (b) v[e] += b[p.col + e];
      if (sample) v[e] += sample[p.col + e];
    }
    if (residual) {
      load_cols(residual + at, p.col, p.count, paired, r);
      v[0] += r[0];
      v[1] += r[1];
    }
    store_cols(y + at, p.col, p.count, paired, v);
  }
}

// The pass, on the engine's stream, by runs where they fit, else by pairs. pixels: the rows
// per sample of per_sample (unused when it is null).
template <class T, class A>
void add_to_rows(int64_t m, int64_t n, int64_t pixels, const T* src, const float* b,
                 const float* per_sample, const A* residual, A* y) {
  if (m == 0 || n == 0) return;
  if (rows_run(n, src) && rows_run(n, residual) && rows_run(n, y)) {
    DDPM_LAUNCH((row_adds_runs_kernel<T, A>), grid_for(m * (n / kRun)), kThreads)(
        m, n, pixels, src, b, per_sample, residual, y);
    return;
  }
  const bool paired = rows_pair(n, src) && rows_pair(n, residual) && rows_pair(n, y);
  DDPM_LAUNCH((row_adds_pairs_kernel<T, A>), grid_for(m * ColumnPair::pairs(n)), kThreads)(
      m, n, pixels, paired, src, b, per_sample, residual, y);
}

}  // namespace ddpm::cuda
