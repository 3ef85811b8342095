// Reductions on the GPU, deterministic.
//
// A full sum runs in two launches: stage 1, P blocks each reduce a fixed strided slice of
// the input (grid-stride order, then a block tree sum) to one partial; stage 2, one block
// sums the P partials in the same tree order. P = min(kPartials, n / 256 rounded up): a
// small sum (a batch's losses, a test's few thousand values) launches the blocks it fills,
// not 512 mostly idle ones. The grouping depends on n only, never on timing, so two runs
// give the same bits (float atomics would not). The per-sample MSE uses one block per
// sample, with the same block tree.
// Limits: bandwidth-bound; kPartials = 512 blocks is enough to saturate memory on current
// GPUs for large n, and few enough for stage 2 to be one block.
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace ddpm::cuda {

namespace {

constexpr int kPartials = kSumWorkspace;

// kMode 0: sum of x; 1: sum of (x - t)^2.
template <int kMode>
__global__ void partial_sum_kernel(int64_t n, const float* x, const float* t, float* partials) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  DDPM_GRID_STRIDE(i, n) {
    if (kMode == 0) {
      acc += x[i];
    } else {
      const float d = x[i] - t[i];
      acc += d * d;
    }
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void finish_sum_kernel(int count, float scale, const float* partials, float* y) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) y[0] = acc * scale;
}

__global__ void fill_accumulate_kernel(int64_t n, float scale, const float* dy, float* dx) {
  const float g = scale * dy[0];
  DDPM_GRID_STRIDE(i, n)
    dx[i] += g;
}

// g = k * dy[sample] * (pred - target); per_sample: sample = i / inner, else sample 0
__global__ void mse_backward_kernel(int64_t n, int64_t inner, float k, const float* pred,
                                    const float* target, const float* dy, float* dpred,
                                    float* dtarget) {
  DDPM_GRID_STRIDE(i, n) {
    const float g = k * dy[i / inner] * (pred[i] - target[i]);
    if (dpred) dpred[i] += g;
    if (dtarget) dtarget[i] -= g;
  }
}

__global__ void mse_per_sample_kernel(int64_t inner, const float* pred, const float* target,
                                      float* y) {
  __shared__ float scratch[32];
  const float* p = pred + blockIdx.x * inner;
  const float* t = target + blockIdx.x * inner;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    const float d = p[i] - t[i];
    acc += d * d;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) y[blockIdx.x] = acc / static_cast<float>(inner);
}

template <int kMode>
void full_sum(int64_t n, float scale, const float* x, const float* t, float* y, float* partials) {
  const unsigned blocks = grid_for(n, kPartials);
  DDPM_LAUNCH(partial_sum_kernel<kMode>, blocks, kThreads)(n, x, t, partials);
  DDPM_LAUNCH(finish_sum_kernel, 1, kThreads)(static_cast<int>(blocks), scale, partials, y);
}

}  // namespace

void sum_forward(int64_t n, float scale, const float* x, float* y, float* workspace) {
  full_sum<0>(n, scale, x, nullptr, y, workspace);
}

void sum_backward(int64_t n, float scale, const float* dy, float* dx) {
  if (n == 0) return;
  DDPM_LAUNCH(fill_accumulate_kernel, grid_for(n), kThreads)(n, scale, dy, dx);
}

void mse_forward(int64_t n, const float* pred, const float* target, float* y, float* workspace) {
  full_sum<1>(n, 1.0f / static_cast<float>(n), pred, target, y, workspace);
}

void mse_backward(int64_t n, const float* pred, const float* target, const float* dy,
                  float* dpred, float* dtarget) {
  if (n == 0) return;
  DDPM_LAUNCH(mse_backward_kernel, grid_for(n), kThreads)(n, n, 2.0f / static_cast<float>(n), pred,
                                                 target, dy, dpred, dtarget);
}

void mse_per_sample_forward(int64_t n, int64_t inner, const float* pred, const float* target,
                            float* y) {
  if (n == 0) return;
  DDPM_LAUNCH(mse_per_sample_kernel, static_cast<unsigned>(n), kThreads)(inner, pred, target, y);
}

void mse_per_sample_backward(int64_t n, int64_t inner, const float* pred, const float* target,
                             const float* dy, float* dpred, float* dtarget) {
  if (n * inner == 0) return;
  DDPM_LAUNCH(mse_backward_kernel, grid_for(n * inner), kThreads)(n * inner, inner,
                                                         2.0f / static_cast<float>(inner), pred,
                                                         target, dy, dpred, dtarget);
}

}  // namespace ddpm::cuda
