// CPU reference for data movement on NHWC tensors: nearest-neighbour 2x upsampling, and the
// strided block copy that channel concat and split are made of.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

// y[n, oh, ow, c] = x[n, oh/2, ow/2, c]
template <class T>
void upsample_nearest2x_forward(const UpsampleShape& s, const T* x /* (N,H,W,C) */,
                                T* y /* (N,2H,2W,C) */);
// dx[n, ih, iw, c] += the four dy values that copied it
template <class T>
void upsample_nearest2x_backward(const UpsampleShape& s, const T* dy, T* dx);

// The four output phases of an upsample-conv (kernels/upsample_conv.h) interleaved into one
// map and back: y[n, 2i + a, 2j + b, c] = ys[2a + b][n, i, j, c]; s is the shape of each ys.
template <class T>
void interleave_phases_forward(const UpsampleShape& s, const T* const (&ys)[4], T* y);
// dys[2a + b][n, i, j, c] = dy[n, 2i + a, 2j + b, c] (written, not added)
template <class T>
void interleave_phases_backward(const UpsampleShape& s, const T* dy, T* const (&dys)[4]);

// dst[r, 0..cols) = src[r, 0..cols)   (row strides src_ld, dst_ld)
template <class T> void slice_copy(const SliceShape& s, const T* src, T* dst);
// dst[r, 0..cols) += src[r, 0..cols)
template <class T> void slice_accumulate(const SliceShape& s, const T* src, T* dst);

}  // namespace ddpm::cpu
