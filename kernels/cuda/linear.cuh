// Linear layers on the GPU through cuBLAS (DESIGN.md: cuBLAS may serve plain GEMMs); same
// contract as kernels/cpu/linear.h (f32; forward overwrites, backward accumulates).
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y);
void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db);

}  // namespace ddpm::cuda
