// The elementwise family on the GPU.
//
// Work mapping: one thread per element in a grid-stride loop (kThreads per block, grid from
// grid_for). Every kernel here is memory-bound: it reads and writes each element once, so its
// speed is bytes / bandwidth; the arithmetic (at most an exp) is free in comparison.
// Broadcast-add backward sums dy over rows: the two-stage column sums of column_sum.cuh
// (parallel over row chunks, fixed order, no atomics).
#include "engine/cuda_check.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/column_sum.cuh"
#include "kernels/bf16.h"
#include "kernels/tf32.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/rounding.h"

namespace ddpm::cuda {

namespace {

template <class T>  // fp32 or bf16 bits (storage.cuh): the sum in fp32, stored once
__global__ void add_kernel(int64_t n, const T* a, const T* b, T* y) {
  DDPM_GRID_STRIDE(i, n) store(y, i, load(a, i) + load(b, i));
}
__global__ void mul_kernel(int64_t n, const float* a, const float* b, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}
__global__ void scale_kernel(int64_t n, float s, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = s * x[i];
}
__global__ void axpy_kernel(int64_t n, float alpha, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
__global__ void mul_accumulate_kernel(int64_t n, const float* a, const float* b, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] += a[i] * b[i];
}
// x, y: (N, S, C); v: (C) or (N, C), all in Words: float, or float4 (4 channels) when C is a
// multiple of 4 and the pointers 16-byte aligned, C / 4 = cw Words a row. Word i is in
// row i / cw of the (N * S, cw) matrix, of sample row / S. The index arithmetic (64-bit
// divisions) outweighs the add, so a Word of 4 channels pays it once for four: nvcc -ptx,
// sm_90, 98 instructions per float4 against 92 per float.
__device__ __forceinline__ float plus(float a, float b) { return a + b; }
__device__ __forceinline__ float4 plus(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
template <class Word>
__global__ void broadcast_add_kernel(BroadcastShape s, int64_t cw, const Word* x, const Word* v,
                                     Word* y) {
  DDPM_GRID_STRIDE(i, s.n * s.s * cw) {
    const int64_t row = i / cw, col = i - row * cw;
    y[i] = plus(x[i], v[s.per_sample ? row / s.s * cw + col : col]);
  }
}
// dy viewed as `vectors` matrices of (rows x C): one per sample when per_sample, else one.
// T: fp32 or bf16 bits (bf16 activations' gradients), read into fp32.
template <class T>
struct BroadcastRows {
  int64_t rows, c;
  const T* dy;  // (vectors, rows, C)
  __device__ void operator()(int64_t vec, int64_t row, int64_t col, float* v) const {
    v[0] = load(dy, (vec * rows + row) * c + col);
  }
};


ColumnSumPlan broadcast_plan(const BroadcastShape& s, bool with_workspace) {
  return s.per_sample ? plan_column_sums(s.n, s.s, s.c, with_workspace)
                      : plan_column_sums(1, s.n * s.s, s.c, with_workspace);
}

template <class T>
void broadcast_backward(const BroadcastShape& s, const T* dy, float* dv, float* workspace,
                        GradWrite dv_write) {
  const ColumnSumPlan p = broadcast_plan(s, workspace != nullptr);
  column_sums<1>(p, BroadcastRows<T>{p.rows, s.c, dy}, workspace, dv, nullptr, dv_write);
}

__global__ void per_sample_axpby_kernel(int64_t n, int64_t inner, const float* a, const float* x,
                                        const float* b, const float* y, float* out) {
  // rounded like the CPU's a*x + b*y (no fma): x_t from make_x_t is the same bits on both
  DDPM_GRID_STRIDE(i, n * inner) out[i] = add_rn(mul_rn(a[i / inner], x[i]), mul_rn(b[i / inner], y[i]));
}
__global__ void per_sample_scale_accumulate_kernel(int64_t n, int64_t inner, const float* a,
                                                   const float* dout, float* dx) {
  DDPM_GRID_STRIDE(i, n * inner) dx[i] += a[i / inner] * dout[i];
}
__global__ void clamp_kernel(int64_t n, float lo, float hi, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = fminf(fmaxf(x[i], lo), hi);
}
__global__ void clamp_backward_kernel(int64_t n, float lo, float hi, const float* x,
                                      const float* dy, float* dx) {
  DDPM_GRID_STRIDE(i, n) if (x[i] > lo && x[i] < hi) dx[i] += dy[i];
}
__global__ void silu_kernel(int64_t n, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = silu_value(x[i]);
}
__global__ void round_to_bf16_kernel(int64_t n, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = ::ddpm::round_to_bf16(x[i]);
}
__global__ void to_bf16_bits_kernel(int64_t n, const float* x, uint16_t* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = bf16_round(x[i]);
}
__global__ void round_to_tf32_kernel(int64_t n, const float* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = ::ddpm::round_to_tf32(x[i]);
}
__global__ void silu_backward_kernel(int64_t n, const float* x, const float* dy, float* dx,
                                     bool add) {
  DDPM_GRID_STRIDE(i, n) store_grad(dx, i, dy[i] * silu_derivative(x[i]), add);
}

}  // namespace

#define LAUNCH(kernel, n, ...) \
  do {                             \
    if ((n) > 0) DDPM_LAUNCH(kernel, grid_for(n), kThreads)(__VA_ARGS__); \
  } while (0)

void add_forward(int64_t n, const float* a, const float* b, float* y) {
  LAUNCH(add_kernel<float>, n, n, a, b, y);
}
void add_forward(int64_t n, const uint16_t* a, const uint16_t* b, uint16_t* y) {
  LAUNCH(add_kernel<uint16_t>, n, n, a, b, y);
}
void mul_forward(int64_t n, const float* a, const float* b, float* y) { LAUNCH(mul_kernel, n, n, a, b, y); }
void scale_forward(int64_t n, float s, const float* x, float* y) { LAUNCH(scale_kernel, n, n, s, x, y); }
void axpy(int64_t n, float alpha, const float* x, float* y) { LAUNCH(axpy_kernel, n, n, alpha, x, y); }
void mul_accumulate(int64_t n, const float* a, const float* b, float* y) {
  LAUNCH(mul_accumulate_kernel, n, n, a, b, y);
}
void broadcast_add_forward(const BroadcastShape& s, const float* x, const float* v, float* y) {
  if (rows_align(s.c, x, 4) && rows_align(s.c, v, 4) && rows_align(s.c, y, 4)) {
    LAUNCH(broadcast_add_kernel<float4>, s.n * s.s * s.c / 4, s, s.c / 4,
           reinterpret_cast<const float4*>(x), reinterpret_cast<const float4*>(v),
           reinterpret_cast<float4*>(y));
  } else {
    LAUNCH(broadcast_add_kernel<float>, s.n * s.s * s.c, s, s.c, x, v, y);
  }
}
int64_t broadcast_add_backward_workspace(const BroadcastShape& s) {
  return broadcast_plan(s, true).workspace_floats(1);
}
void broadcast_add_backward(const BroadcastShape& s, const float* dy, float* dv, float* workspace,
                            GradWrite dv_write) {
  broadcast_backward(s, dy, dv, workspace, dv_write);
}
void broadcast_add_backward(const BroadcastShape& s, const uint16_t* dy, float* dv,
                            float* workspace, GradWrite dv_write) {
  broadcast_backward(s, dy, dv, workspace, dv_write);
}
void per_sample_axpby_forward(int64_t n, int64_t inner, const float* a, const float* x,
                              const float* b, const float* y, float* out) {
  LAUNCH(per_sample_axpby_kernel, n * inner, n, inner, a, x, b, y, out);
}
void per_sample_scale_accumulate(int64_t n, int64_t inner, const float* a, const float* dout,
                                 float* dx) {
  LAUNCH(per_sample_scale_accumulate_kernel, n * inner, n, inner, a, dout, dx);
}
void clamp_forward(int64_t n, float lo, float hi, const float* x, float* y) {
  LAUNCH(clamp_kernel, n, n, lo, hi, x, y);
}
void clamp_backward(int64_t n, float lo, float hi, const float* x, const float* dy, float* dx) {
  LAUNCH(clamp_backward_kernel, n, n, lo, hi, x, dy, dx);
}
void silu_forward(int64_t n, const float* x, float* y) { LAUNCH(silu_kernel, n, n, x, y); }
void silu_backward(int64_t n, const float* x, const float* dy, float* dx, GradWrite dx_write) {
  LAUNCH(silu_backward_kernel, n, n, x, dy, dx, dx_write == GradWrite::Accumulate);
}
void round_to_bf16(int64_t n, const float* x, float* y) { LAUNCH(round_to_bf16_kernel, n, n, x, y); }
void to_bf16_bits(int64_t n, const float* x, uint16_t* y) { LAUNCH(to_bf16_bits_kernel, n, n, x, y); }
void round_to_tf32(int64_t n, const float* x, float* y) { LAUNCH(round_to_tf32_kernel, n, n, x, y); }

#undef LAUNCH

}  // namespace ddpm::cuda
