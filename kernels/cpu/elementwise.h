// CPU reference kernels for the elementwise family: add, mul, scale, axpy, the per-channel /
// per-sample broadcast add, and SiLU. Forward kernels overwrite their output; backward
// kernels ACCUMULATE (+=) into gradients, the tape's convention.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T> void add_forward(int64_t n, const T* a, const T* b, T* y);  // y = a + b
template <class T> void mul_forward(int64_t n, const T* a, const T* b, T* y);  // y = a * b
template <class T> void scale_forward(int64_t n, T s, const T* x, T* y);       // y = s x
template <class T> void axpy(int64_t n, T alpha, const T* x, T* y);           // y += alpha x
template <class T> void mul_accumulate(int64_t n, const T* a, const T* b, T* y);  // y += a * b

// y = x + broadcast(v); dv += sum of dy over the broadcast axes (dx is dy: use axpy).
template <class T>
void broadcast_add_forward(const BroadcastShape& s, const T* x /* (N,S,C) */,
                           const T* v /* (C) or (N,C) */, T* y /* (N,S,C) */);
template <class T>
void broadcast_add_backward(const BroadcastShape& s, const T* dy /* (N,S,C) */,
                            T* dv /* (C) or (N,C) */);

// Per-sample linear combination: out[n, i] = a[n] x[n, i] + b[n] y[n, i], a and b (N), x, y
// and out (N, inner). Every DDPM conversion (x_t from x0 and eps, x0 from x_t and eps, v,
// ...) is one of these. Backward: dx[n, i] += a[n] dout[n, i] (likewise for y with b).
template <class T>
void per_sample_axpby_forward(int64_t n, int64_t inner, const T* a, const T* x, const T* b,
                              const T* y, T* out);
template <class T>
void per_sample_scale_accumulate(int64_t n, int64_t inner, const T* a, const T* dout, T* dx);

// Clamp to [lo, hi]; backward passes dy where lo < x < hi.
template <class T> void clamp_forward(int64_t n, T lo, T hi, const T* x, T* y);
template <class T> void clamp_backward(int64_t n, T lo, T hi, const T* x, const T* dy, T* dx);

// SiLU: y = x sigmoid(x); dx += dy sigmoid(x) (1 + x (1 - sigmoid(x))).
template <class T> void silu_forward(int64_t n, const T* x, T* y);
template <class T> void silu_backward(int64_t n, const T* x, const T* dy, T* dx);
// y = x rounded to the nearest bf16 value (kernels/bf16.h), kept as f32: the operands of
// matrix products under Precision::BF16.
void round_to_bf16(int64_t n, const float* x, float* y);
// y = x rounded to the nearest TF32 value, ties away from zero (kernels/tf32.h), under
// Precision::TF32.
void round_to_tf32(int64_t n, const float* x, float* y);

}  // namespace ddpm::cpu
