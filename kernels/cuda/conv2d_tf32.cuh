// The TF32 convolution on tensor cores (conv2d_tf32.cu), precision tf32's default: v4's
// GEMM (conv2d_bf16.cuh) in two ways. Where the reduction's operands are K-major and their
// channels a multiple of 4 (the forward, the stride-1 dgrad), TF32 products: the fp32
// tensors read in place, rounded by cvt.rna, multiplied by mma.m16n8k8 .tf32. Elsewhere (the
// wgrad, whose operands are MN-major; a strided dgrad; odd channel counts) each operand as
// the exact sum of two bf16 pieces (kernels/tf32.h), the four products of the pieces summed
// by the bf16 GEMM. Either way the numbers of a TF32 tensor-core convolution (operands
// rounded to TF32 as cvt.rna does, products exact, sums in fp32): what v3 and the CPU's
// Precision::TF32 give, up to the order of the sums. Same contracts as conv2d.cuh's fp32
// entries: forward overwrites y (plus the optional adds), backward writes or adds dx and dw
// (kernels/grad_write.h); the bias gradient is the caller's (conv2d.cu). Needs sm_80 or
// later, as v4 does.
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

int64_t conv2d_tf32_forward_workspace(const Conv2dShape& s);
void conv2d_tf32_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample = nullptr,
                         const float* residual = nullptr);
int64_t conv2d_tf32_backward_workspace(const Conv2dShape& s);
void conv2d_tf32_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* workspace,
                          GradWrite dx_write = GradWrite::Accumulate,
                          GradWrite dw_write = GradWrite::Accumulate);

// Whether the forward and the stride-1 dgrad run on TF32 products where they can (on by
// default), or on the bf16 pieces like the rest (off: to time or test the pieces on every
// pass). Process-wide.
void set_conv2d_tf32_mma(bool on);
bool conv2d_tf32_mma();

}  // namespace ddpm::cuda
