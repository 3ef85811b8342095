// CUDA kernels for the elementwise family, same contracts as kernels/cpu/elementwise.h
// (f32, and bf16 bits where a bf16 activation passes through: add; forward overwrites,
// backward accumulates, or with GradWrite::Assign writes a first gradient outright:
// kernels/grad_write.h). All launch on the engine's stream (engine/cuda_stream.h).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

void add_forward(int64_t n, const float* a, const float* b, float* y);
void add_forward(int64_t n, const uint16_t* a, const uint16_t* b, uint16_t* y);  // bf16 bits
void mul_forward(int64_t n, const float* a, const float* b, float* y);
void scale_forward(int64_t n, float s, const float* x, float* y);
void axpy(int64_t n, float alpha, const float* x, float* y);
void mul_accumulate(int64_t n, const float* a, const float* b, float* y);
void broadcast_add_forward(const BroadcastShape& s, const float* x, const float* v, float* y);
// dv += dy summed over the broadcast rows. workspace: null (one pass per column, slow for
// many rows) or broadcast_add_backward_workspace(s) floats (column_sum.cuh).
int64_t broadcast_add_backward_workspace(const BroadcastShape& s);
void broadcast_add_backward(const BroadcastShape& s, const float* dy, float* dv,
                            float* workspace = nullptr,
                            GradWrite dv_write = GradWrite::Accumulate);
// The same sums of a bf16 dy (bits), in fp32: the bias gradients of bf16 activations.
void broadcast_add_backward(const BroadcastShape& s, const uint16_t* dy, float* dv,
                            float* workspace = nullptr,
                            GradWrite dv_write = GradWrite::Accumulate);
void per_sample_axpby_forward(int64_t n, int64_t inner, const float* a, const float* x,
                              const float* b, const float* y, float* out);
void per_sample_scale_accumulate(int64_t n, int64_t inner, const float* a, const float* dout,
                                 float* dx);
void clamp_forward(int64_t n, float lo, float hi, const float* x, float* y);
void clamp_backward(int64_t n, float lo, float hi, const float* x, const float* dy, float* dx);
void silu_forward(int64_t n, const float* x, float* y);
void silu_backward(int64_t n, const float* x, const float* dy, float* dx,
                   GradWrite dx_write = GradWrite::Accumulate);
// y = x rounded to the nearest bf16 value (kernels/bf16.h), kept as fp32: the operands of
// bf16 matrix products (engine precision bf16).
void round_to_bf16(int64_t n, const float* x, float* y);
// y = the same rounding as bf16 bits (kernels/bf16.h): the bf16 copies tensor-core products read.
void to_bf16_bits(int64_t n, const float* x, uint16_t* y);
// y = x rounded to the nearest TF32 value, ties away from zero (kernels/tf32.h).
void round_to_tf32(int64_t n, const float* x, float* y);

}  // namespace ddpm::cuda
