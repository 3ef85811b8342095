// The TF32 convolution on bf16 tensor cores (conv2d_tf32_pieces.cu): each TF32 operand split
// into two bf16 pieces (kernels/tf32.h), the four products of the pieces summed by v4's or
// v5's GEMM (conv2d_bf16.cuh) in fp32. The numbers of a TF32 tensor-core convolution
// (operands rounded to TF32 by cvt.rna, products exact, sums in fp32: what v3 and the CPU's
// Precision::TF32 give, up to the order of the sums). Same contracts as conv2d.cuh's fp32
// entries: forward overwrites y (plus the optional adds), backward writes or adds dx and dw
// (kernels/grad_write.h); the bias gradient is the caller's (conv2d.cu). Needs sm_80 or
// later, as v4 does.
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

int64_t conv2d_tf32_pieces_forward_workspace(const Conv2dShape& s);
void conv2d_tf32_pieces_forward(const Conv2dShape& s, const float* x, const float* w,
                                const float* b, float* y, float* workspace,
                                const float* per_sample = nullptr,
                                const float* residual = nullptr);
int64_t conv2d_tf32_pieces_backward_workspace(const Conv2dShape& s);
void conv2d_tf32_pieces_backward(const Conv2dShape& s, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* workspace,
                                 GradWrite dx_write = GradWrite::Accumulate,
                                 GradWrite dw_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
