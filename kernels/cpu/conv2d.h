// CPU reference for 2-D convolution, NHWC activations and (KH, KW, Cin, Cout) weights.
//
// The reference is a direct convolution organised as small matrix products: for one output
// row (n, oh) and one filter tap (kh, kw), the output pixels whose input pixel lies inside the
// image form a contiguous run ow0..ow1, their input pixels are every stride-th pixel of input
// row ih = oh*stride - pad_top + kh, and
//     y[n, oh, ow0..ow1, :] += x[n, ih, iw0.., :] (run x Cin, row stride = stride*Cin)
//                              * w[kh, kw] (Cin x Cout)
// Padding never materialises: out-of-image taps are simply outside the run.
//   forward  parallel over output rows (n, oh): no two tasks write the same output row;
//   dgrad    gathered per input row (n, ih): each task finds the (oh, kh) pairs that read
//            row ih, so no two tasks write the same dx row;
//   wgrad    parallel over (tap, block of input channels): each task owns a block of dw.
// All three accumulate in a fixed order: results do not depend on the thread count.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x /* (N,H,W,Cin) */,
                    const T* w /* (KH,KW,Cin,Cout) */, const T* b /* (Cout), nullable */,
                    T* y /* (N,OH,OW,Cout) */);

// Accumulates into whichever of dx (N,H,W,Cin), dw (KH,KW,Cin,Cout), db (Cout) is non-null.
template <class T>
void conv2d_backward(const Conv2dShape& s, const T* x, const T* w, const T* dy /* (N,OH,OW,Cout) */,
                     T* dx, T* dw, T* db);

}  // namespace ddpm::cpu
