// Group norm on the GPU, x (N, S, C) channels-last.
//
// Work mapping: one block per (sample, group). The group's S * C/G values are strided in
// memory (C/G contiguous channels per pixel, pixels C apart); the block's threads walk them
// in a grid-stride order, so each warp reads runs of C/G contiguous floats.
//   forward   pass 1 sums x (block tree) -> mean; pass 2 sums (x - mean)^2 -> var (two
//             passes over data that stays in L2 for CIFAR shapes: exact where one-pass
//             E[x^2] - E[x]^2 loses digits); pass 3 writes y.
//   backward  one block per (sample, group) sums g = dy*gamma and g*xhat, then writes
//             dx += rstd (g - mean(g) - xhat mean(g xhat)) (or dx = ..., the first
//             contribution: kernels/grad_write.h); dgamma/dbeta: the two-stage
//             column sums of column_sum.cuh over the N*S rows. Deterministic: no atomics.
// Limits: memory-bound (3 reads + 1 write of x forward).
// Storage: every kernel is a template on the activations' storage type T (x, y, dy, dh, dx):
// f32, or bf16 bits (uint16_t, kernels/bf16.h) read into fp32 and rounded once when stored.
// Statistics, affine parameters and their gradients stay fp32, and so does every sum. The
// bf16 versions move half the bytes (the point: these kernels are bandwidth-bound).
#include "engine/cuda_check.h"
#include "engine/philox.h"
#include "kernels/bf16.h"
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"  // load / store: activations in T, arithmetic in fp32

namespace ddpm::cuda {

namespace {

// Dropout's factor for flat element i: 1/(1-p) kept, 0 dropped (as the dropout op decides).
// d has its stream read (read_key), so .base is the stream.
__device__ __forceinline__ bool dropout_keeps(const DropoutSpec& d, int64_t i) {
  return philox_uniform(d.seed, d.stream.base, static_cast<uint64_t>(i)) >= d.p;
}
__device__ __forceinline__ DropoutSpec read_key(DropoutSpec d) {
  d.stream = d.stream.value();  // a captured step's stream is in device memory
  return d;
}

// kSilu: write silu(h) instead of h (the fused GN + SiLU: h never goes to memory), then
// dropout when drop.p > 0 (the mask drawn in the same pass).
template <bool kSilu, class T>
__global__ void group_norm_forward_kernel(GroupNormShape s, const T* x, const float* gamma,
                                          const float* beta, T* y, float* mean, float* rstd,
                                          DropoutSpec keyed) {
  __shared__ float scratch[32];
  const DropoutSpec drop = read_key(keyed);
  const int64_t cg = s.c / s.groups, n = blockIdx.x / s.groups, c0 = (blockIdx.x % s.groups) * cg;
  const int64_t count = s.s * cg;
  const T* xs = x + n * s.s * s.c + c0;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += load(xs, (i / cg) * s.c + i % cg);
  const float mu = block_sum(acc, scratch) / static_cast<float>(count);
  acc = 0.0f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const float d = load(xs, (i / cg) * s.c + i % cg) - mu;
    acc += d * d;
  }
  const float r = rsqrtf(block_sum(acc, scratch) / static_cast<float>(count) + s.eps);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = r;
  }
  T* ys = y + n * s.s * s.c + c0;
  const float keep_scale = 1.0f / (1.0f - drop.p);  // as the dropout op computes it
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t off = (i / cg) * s.c + i % cg, c = c0 + i % cg;
    const float h = (load(xs, off) - mu) * r * gamma[c] + beta[c];
    const float v = kSilu ? h / (1.0f + expf(-h)) : h;
    if (drop.p > 0.0f)
      store(ys, off, dropout_keeps(drop, n * s.s * s.c + c0 + off) ? v * keep_scale : 0.0f);
    else
      store(ys, off, v);
  }
}

// dh = dy' * silu'(h), h recomputed; dy' = dy through dropout's backward (the mask
// regenerated) when drop.p > 0, else dy. One thread per element.
template <class T>
__global__ void group_norm_silu_dh_kernel(GroupNormShape s, const T* x, const float* gamma,
                                          const float* beta, const float* mean, const float* rstd,
                                          const T* dy, T* dh, DropoutSpec keyed) {
  const DropoutSpec drop = read_key(keyed);
  const int64_t cg = s.c / s.groups, total = s.n * s.s * s.c;
  const float keep_scale = 1.0f / (1.0f - drop.p);
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c, g = (i / (s.s * s.c)) * s.groups + c / cg;
    const float h = (load(x, i) - mean[g]) * rstd[g] * gamma[c] + beta[c];
    const float sig = 1.0f / (1.0f + expf(-h));
    float d = load(dy, i);
    if (drop.p > 0.0f) d = dropout_keeps(drop, i) ? d * keep_scale : 0.0f;
    store(dh, i, d * sig * (1.0f + h * (1.0f - sig)));
  }
}

template <class T>
__global__ void group_norm_dx_kernel(GroupNormShape s, const T* x, const float* gamma,
                                     const float* mean, const float* rstd, const T* dy, T* dx,
                                     bool add) {
  __shared__ float scratch[32];
  const int64_t cg = s.c / s.groups, n = blockIdx.x / s.groups, c0 = (blockIdx.x % s.groups) * cg;
  const int64_t count = s.s * cg, base = n * s.s * s.c + c0;
  const float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t off = base + (i / cg) * s.c + i % cg;
    const float g = load(dy, off) * gamma[c0 + i % cg];
    sum_g += g;
    sum_gx += g * (load(x, off) - mu) * r;
  }
  const float mean_g = block_sum(sum_g, scratch) / static_cast<float>(count);
  const float mean_gx = block_sum(sum_gx, scratch) / static_cast<float>(count);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t off = base + (i / cg) * s.c + i % cg;
    const float g = load(dy, off) * gamma[c0 + i % cg];
    const float d = r * (g - mean_g - (load(x, off) - mu) * r * mean_gx);
    store_grad(dx, off, d, add);
  }
}

// Element (row, c) of dgamma's and dbeta's sums over the N*S rows: dy xhat and dy.
template <class T>
struct ParamGradTerms {
  GroupNormShape s;
  const T* x;  // (N, S, C)
  const float* mean;
  const float* rstd;  // (N, G)
  const T* dy;        // (N, S, C)
  __device__ void operator()(int64_t, int64_t row, int64_t c, float* v) const {
    const int64_t g = (row / s.s) * s.groups + c / (s.c / s.groups), off = row * s.c + c;
    const float d = load(dy, off);
    v[0] = d * (load(x, off) - mean[g]) * rstd[g];
    v[1] = d;
  }
};

ColumnSumPlan param_grad_plan(const GroupNormShape& s, bool with_workspace) {
  return plan_column_sums(1, s.n * s.s, s.c, with_workspace);
}

// The entries, one template per storage type.
template <class T>
void forward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta, T* y,
             float* mean, float* rstd, bool silu, const DropoutSpec& dropout) {
  if (s.n * s.groups == 0) return;
  const unsigned blocks = static_cast<unsigned>(s.n * s.groups);
  if (silu)
    DDPM_LAUNCH((group_norm_forward_kernel<true, T>), blocks, kThreads)(s, x, gamma, beta, y, mean,
                                                                        rstd, dropout);
  else
    DDPM_LAUNCH((group_norm_forward_kernel<false, T>), blocks, kThreads)(s, x, gamma, beta, y,
                                                                         mean, rstd, dropout);
}

template <class T>
void silu_dh(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
             const float* mean, const float* rstd, const T* dy, T* dh, const DropoutSpec& dropout) {
  const int64_t total = s.n * s.s * s.c;
  if (total == 0) return;
  DDPM_LAUNCH(group_norm_silu_dh_kernel<T>, grid_for(total), kThreads)(
      s, x, gamma, beta, mean, rstd, dy, dh, dropout);
}

template <class T>
void backward(const GroupNormShape& s, const T* x, const float* gamma, const float* mean,
              const float* rstd, const T* dy, T* dx, float* dgamma, float* dbeta,
              float* workspace, GradWrite dx_write) {
  if (s.n * s.groups == 0) return;
  if (dx)
    DDPM_LAUNCH(group_norm_dx_kernel<T>, static_cast<unsigned>(s.n * s.groups), kThreads)(
        s, x, gamma, mean, rstd, dy, dx, dx_write == GradWrite::Accumulate);
  if (dgamma || dbeta)
    column_sums<2>(param_grad_plan(s, workspace != nullptr),
                   ParamGradTerms<T>{s, x, mean, rstd, dy}, workspace, dgamma, dbeta);
}

}  // namespace

int64_t group_norm_backward_workspace(const GroupNormShape& s) {
  return param_grad_plan(s, true).workspace_floats(2);
}

void group_norm_forward(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, float* y, float* mean, float* rstd) {
  forward(s, x, gamma, beta, y, mean, rstd, false, DropoutSpec{});
}

void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd,
                             const DropoutSpec& dropout) {
  forward(s, x, gamma, beta, y, mean, rstd, true, dropout);
}

void group_norm_silu_dh(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, const float* mean, const float* rstd, const float* dy,
                        float* dh, const DropoutSpec& dropout) {
  silu_dh(s, x, gamma, beta, mean, rstd, dy, dh, dropout);
}

void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* workspace, GradWrite dx_write) {
  backward(s, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, workspace, dx_write);
}

void group_norm_forward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, uint16_t* y, float* mean, float* rstd, bool silu,
                             const DropoutSpec& dropout) {
  forward(s, x, gamma, beta, y, mean, rstd, silu, dropout);
}

void group_norm_silu_dh_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd,
                             const uint16_t* dy, uint16_t* dh, const DropoutSpec& dropout) {
  silu_dh(s, x, gamma, beta, mean, rstd, dy, dh, dropout);
}

void group_norm_backward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                              const float* mean, const float* rstd, const uint16_t* dy,
                              uint16_t* dx, float* dgamma, float* dbeta, float* workspace,
                              GradWrite dx_write) {
  backward(s, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, workspace, dx_write);
}

}  // namespace ddpm::cuda
