// Linear layers on the GPU through cuBLAS (DESIGN.md: cuBLAS may serve plain GEMMs); same
// contract as kernels/cpu/linear.h (f32; forward overwrites, backward accumulates).
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cuda {

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y);
// db is the column sum of dy: workspace null or linear_backward_workspace(s) floats
// (kernels/cuda/column_sum.cuh).
int64_t linear_backward_workspace(const LinearShape& s);
void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace = nullptr);

}  // namespace ddpm::cuda
