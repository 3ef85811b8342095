// 2-D convolution on the CPU through oneDNN: the fast float path beside the reference
// kernels/cpu/conv2d.h, with the same contract (NHWC x, (KH, KW, Cin, Cout) w, forward
// overwrites y, backward accumulates into dx, dw, db; any of those may be null).
//
// oneDNN takes our layouts as they are (activations nhwc, weights hwio) and per-side
// padding, so no copy of the activations is made. Its fastest kernels want the weights in a
// blocked layout of their own: the primitive is created with "any" for the weights and the
// weights are reordered each call (they change every step; the reorder is one pass over
// them, small beside the convolution). oneDNN overwrites its outputs, so the gradients land
// in scratch buffers and are added to dx, dw, db, except a dx written outright
// (GradWrite::Assign, kernels/grad_write.h: x's first gradient), which oneDNN writes in
// place. Primitives are created once per shape and cached. Threads: oneDNN's OpenMP pool,
// which is the engine's own (one pool for all).
#pragma once

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cpu_fast {

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y);
void conv2d_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, GradWrite dx_write = GradWrite::Accumulate);

}  // namespace ddpm::cpu_fast
