// Convolutions in a precision above bf16's on v4's bf16 GEMM (conv2d_pieces.cu): each fp32
// operand split into bf16 pieces whose sum is exactly the value the precision multiplies,
// and the products of the pieces summed by the bf16 GEMM as more terms of the reduction.
//   - Tf32: two pieces of the operand rounded to TF32 (kernels/tf32.h), all four products:
//     a TF32 convolution's numbers (the TF32 convolution's way for the passes its TF32
//     products cannot take, conv2d_tf32.cu).
//   - Fp32: three pieces of the fp32 operand (kernels/bf16.h, fp32_as_bf16_pieces), the six
//     largest of their nine products (bf16x6): each product within 2^-23 + 2^-32 of itself,
//     where fp32's own rounding is 2^-24; an fp32 convolution (ConvAlgo::Bf16x6TensorCore,
//     "v4 fp32 on bf16x6").
// Same contracts as conv2d.cuh's fp32 entries: the forward overwrites y (plus the optional
// adds), the backward writes or adds dx and dw (kernels/grad_write.h), either may be null;
// the bias gradient is the caller's (conv2d.cu). Needs sm_80 or later, as v4 does.
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

enum class PieceSplit { Tf32, Fp32 };

int64_t conv2d_pieces_forward_workspace(const Conv2dShape& s, PieceSplit split);
void conv2d_pieces_forward(const Conv2dShape& s, PieceSplit split, const float* x,
                           const float* w, const float* b, float* y, float* workspace,
                           const float* per_sample = nullptr, const float* residual = nullptr);
int64_t conv2d_pieces_backward_workspace(const Conv2dShape& s, PieceSplit split);
void conv2d_pieces_backward(const Conv2dShape& s, PieceSplit split, const float* x,
                            const float* w, const float* dy, float* dx, float* dw,
                            float* workspace, GradWrite dx_write = GradWrite::Accumulate,
                            GradWrite dw_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
