// Linear layers on the GPU through cuBLAS (DESIGN.md: cuBLAS may serve plain GEMMs), the
// forward's bias added in cuBLASLt's epilogue (gemm_lt.cuh); same contract as
// kernels/cpu/linear.h (f32; forward overwrites, backward accumulates).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// tf32: x, w (and dy) are already rounded to TF32 (engine precision tf32): the products run
// on TF32 tensor cores, exactly (kernels/cuda/linear.cu).
void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y,
                    bool tf32 = false);
// db is the column sum of dy: workspace null or linear_backward_workspace(s) floats
// (kernels/cuda/column_sum.cuh).
int64_t linear_backward_workspace(const LinearShape& s);
// dx, dw and db accumulate; dx_write Assign writes dx outright (kernels/grad_write.h), here
// and in the entries below.
void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace = nullptr,
                     bool tf32 = false, GradWrite dx_write = GradWrite::Accumulate);

// bf16 operands on tensor cores (engine precision bf16): x, w and dy converted to bf16 in the
// workspace (the *_workspace functions' floats, not null), products summed in fp32 into fp32
// y, dx, dw (cublasGemmEx). db is summed from the fp32 dy. w_bf16, when given: bf16(w)
// already (the weights' copy, engine/weight_copy.h), read instead of converting w.
int64_t linear_bf16_forward_workspace(const LinearShape& s);
void linear_bf16_forward(const LinearShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const uint16_t* w_bf16 = nullptr);
int64_t linear_bf16_backward_workspace(const LinearShape& s);
void linear_bf16_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db, float* workspace,
                          const uint16_t* w_bf16 = nullptr,
                          GradWrite dx_write = GradWrite::Accumulate);

// bf16 activations (engine activation dtype bf16): x, y, dy and dx as bf16 bits, read as they
// are; w and b converted (or their w_bf16 and b_bf16 read), the products summed in fp32, then
// y = bf16(sum + float(bf16(b))) (in cuBLASLt's epilogue, which takes a bias of y's type;
// where it has no algorithm, the sum in the workspace, then a pass) and dx = bf16(float(dx) +
// sum) (in the GEMM's epilogue), each rounded once; dw and db (from the bf16 dy) in fp32.
int64_t linear_bf16_activations_forward_workspace(const LinearShape& s);
void linear_bf16_forward(const LinearShape& s, const uint16_t* x, const float* w, const float* b,
                         uint16_t* y, float* workspace, const uint16_t* w_bf16 = nullptr,
                         const uint16_t* b_bf16 = nullptr);
int64_t linear_bf16_activations_backward_workspace(const LinearShape& s);
void linear_bf16_backward(const LinearShape& s, const uint16_t* x, const float* w,
                          const uint16_t* dy, uint16_t* dx, float* dw, float* db,
                          float* workspace, const uint16_t* w_bf16 = nullptr,
                          GradWrite dx_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
