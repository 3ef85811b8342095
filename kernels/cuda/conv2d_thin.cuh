// Convolutions with few output channels (the U-Net's last layer: 128 -> 3 channels) as direct
// kernels on the CUDA cores (kernels/cuda/conv2d_thin.cu says why not a GEMM). The bf16
// convolution (conv2d_bf16.cuh: v4 and v5) hands them these shapes; the operands, the
// rounding and the contracts are its own: x, w and dy rounded to bf16 as they are read,
// products and sums in fp32, y = conv + b + per_sample[n] + residual stored once, dx and dw
// written or added to by GradWrite.
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

constexpr int64_t kThinMaxOutputChannels = 8;

// Whether the direct kernels take the shape: at most 8 output channels; input channels a
// multiple of 8 (a thread's 16-byte chunk of them), at most 2048 (a pixel's chunks within
// one block); and the weights, padded to 4 or 8 output channels in fp32, within a block's
// 48 KB of shared memory (3x3 kernels: up to 296 input channels for 1-4 outputs, 160 for
// 5-8).
bool conv2d_thin_applies(const Conv2dShape& s);

// Floats of workspace the backward needs (the wgrad's partial sums, a plane per slice of
// pixels), for a shape conv2d_thin_applies takes.
int64_t conv2d_thin_backward_workspace(const Conv2dShape& s);

// w_bf16: the weights' bf16 copy (engine/weight_copy.h), read instead of rounding w; or null.
void conv2d_thin_forward(const Conv2dShape& s, const float* x, const float* w,
                         const uint16_t* w_bf16, const float* b, const float* per_sample,
                         const float* residual, float* y);
void conv2d_thin_forward(const Conv2dShape& s, const uint16_t* x, const float* w,
                         const uint16_t* w_bf16, const float* b, const float* per_sample,
                         const uint16_t* residual, uint16_t* y);
// dx, dw: either may be null (not wanted).
void conv2d_thin_backward(const Conv2dShape& s, const float* x, const float* w,
                          const uint16_t* w_bf16, const float* dy, float* dx, float* dw,
                          float* workspace, GradWrite dx_write, GradWrite dw_write);
void conv2d_thin_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const uint16_t* w_bf16, const uint16_t* dy, uint16_t* dx, float* dw,
                          float* workspace, GradWrite dx_write, GradWrite dw_write);

}  // namespace ddpm::cuda
