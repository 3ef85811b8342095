// CUDA data movement on NHWC tensors; same contracts as kernels/cpu/resample.h, for f32 and
// for bf16 bits (bf16 activations; the accumulating backward sums in fp32 and rounds once).
// The upsample's backward adds into dx, or writes it outright with GradWrite::Assign
// (kernels/grad_write.h).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

void upsample_nearest2x_forward(const UpsampleShape& s, const float* x, float* y);
void upsample_nearest2x_backward(const UpsampleShape& s, const float* dy, float* dx,
                                 GradWrite dx_write = GradWrite::Accumulate);
// The four phases of an upsample-conv interleaved into one map and back (kernels/cpu/
// resample.h's contract; the backward writes dys, it does not add).
void interleave_phases_forward(const UpsampleShape& s, const float* const (&ys)[4], float* y);
void interleave_phases_backward(const UpsampleShape& s, const float* dy, float* const (&dys)[4]);
void slice_copy(const SliceShape& s, const float* src, float* dst);
void slice_accumulate(const SliceShape& s, const float* src, float* dst);
void upsample_nearest2x_forward(const UpsampleShape& s, const uint16_t* x, uint16_t* y);
void upsample_nearest2x_backward(const UpsampleShape& s, const uint16_t* dy, uint16_t* dx,
                                 GradWrite dx_write = GradWrite::Accumulate);
void interleave_phases_forward(const UpsampleShape& s, const uint16_t* const (&ys)[4],
                               uint16_t* y);
void interleave_phases_backward(const UpsampleShape& s, const uint16_t* dy,
                                uint16_t* const (&dys)[4]);
void slice_copy(const SliceShape& s, const uint16_t* src, uint16_t* dst);
void slice_accumulate(const SliceShape& s, const uint16_t* src, uint16_t* dst);

}  // namespace ddpm::cuda
