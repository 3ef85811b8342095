// CPU reference for a linear layer: y (M, N) = x (M, K) w (K, N) + b (N).
// w is stored (in, out), the same layout as a 1x1 convolution's (KH, KW, Cin, Cout) weight.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cpu {

template <class T>
void linear_forward(const LinearShape& s, const T* x, const T* w, const T* b /* nullable */,
                    T* y);
// Accumulates dx += dy w^T, dw += x^T dy, db += column sums of dy. Any of dx, dw, db may be
// null (that gradient is not needed).
template <class T>
void linear_backward(const LinearShape& s, const T* x, const T* w, const T* dy, T* dx, T* dw,
                     T* db);

}  // namespace ddpm::cpu
