// Linear layers on the CPU through oneDNN's sgemm (kernels/cpu_fast/gemm.h: why not
// OpenBLAS's): the fast float path beside the reference kernels/cpu/linear.h, with the same
// contract (y (M, N) = x (M, K) w (K, N) + b; forward overwrites, backward accumulates, beta
// = 1, into dx, dw, db). Row-major throughout, so the GEMM's leading dimensions are our row
// lengths and nothing is transposed in memory.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu_fast {

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y);
void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db);

}  // namespace ddpm::cpu_fast
