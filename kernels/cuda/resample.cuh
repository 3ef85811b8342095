// CUDA data movement on NHWC tensors; same contracts as kernels/cpu/resample.h (f32).
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

void upsample_nearest2x_forward(const UpsampleShape& s, const float* x, float* y);
void upsample_nearest2x_backward(const UpsampleShape& s, const float* dy, float* dx);
void slice_copy(const SliceShape& s, const float* src, float* dst);
void slice_accumulate(const SliceShape& s, const float* src, float* dst);

}  // namespace ddpm::cuda
