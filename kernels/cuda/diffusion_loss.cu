// The fused diffusion loss on the GPU: corruption and loss + gradient, each one pass over the
// batch, eps regenerated from Philox in registers and never stored. Contract and formulas:
// kernels/cpu/diffusion_loss.h and kernels/diffusion_loss_math.h (shared with the CPU).
//
// Work mapping: a 1-D grid of n x chunks blocks (x only: its limit is 2^31 - 1, where y and
// z stop at 65,535): block j * chunks + c owns elements [c * kChunk, (c+1) * kChunk) of
// sample j, so every element's sample, timestep and coefficients are the block's constants.
// kChunk = 4 elements per thread x 256 threads: one Philox call yields 4 normals, so with
// dim % 4 == 0 a thread draws exactly its own 4 values from one call and moves them with one
// 16-byte load/store (kVec4). Otherwise each element calls Philox for its own block of 4
// (4x the arithmetic, same result).
//
// Loss reduction, deterministic: each block sums its squared errors with a fixed-order tree
// (block_sum) into partial[j][c]; finish_kernel (one block) then sums each sample's partials
// in chunk order, forms mse_j, per_sample_j = w_t mse_j and the batch loss with another fixed
// tree. No float atomics anywhere, so two runs give the same bits. The gradient needs no
// reduction (its scale 2 w_t importance_j / (n dim) is known up front) and is written in the
// same pass. Launches: corrupt 1; loss 2 (the data pass and a finish over n x chunks floats).
//
// Bytes at minimum per element (f32): corrupt reads x0 and writes x_t (8; 5 from bytes); the
// loss reads pred and writes dpred (8), plus x0 for the x0 / v targets (12; 9 from bytes).
// Nothing else touches DRAM: eps costs ~40 integer/float instructions per 4 values instead
// of 4 bytes written and 4 bytes read back per use.
#include <cstdint>

#include "engine/cuda_check.h"
#include "kernels/cuda/diffusion_loss.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/diffusion_loss_math.h"

namespace ddpm::cuda {

namespace {

using namespace diffusion;

constexpr int kPerThread = 4;                      // one Philox call's worth of normals
constexpr int64_t kChunk = kThreads * kPerThread;  // elements per block

// The four eps values of elements i .. i+3 of sample j (vector path: j * dim + i is a
// multiple of 4, so they are exactly one Philox block). s has its keys read (.base is the
// value): every kernel starts with read_step_keys.
__device__ __forceinline__ Normal4 eps4(const DiffusionLossShape& s, int64_t j, int64_t i) {
  return philox_normal4(s.noise_seed, s.noise_stream.base,
                        static_cast<uint64_t>(j * s.dim + i) >> 2);
}
__device__ __forceinline__ float eps1(const DiffusionLossShape& s, int64_t j, int64_t i) {
  return philox_normal(s.noise_seed, s.noise_stream.base, static_cast<uint64_t>(j * s.dim + i));
}

// Per-block constants: the sample's coefficients.
struct SampleCoefs {
  float a, b;         // sqrt(abar_t), sqrt(1 - abar_t)
  float w_t;          // loss weight of the timestep
  float batch_weight; // w_t * importance / n
  bool mirror;
};
__device__ __forceinline__ SampleCoefs coefs(const DiffusionLossShape& s,
                                             const DiffusionLossTables<float>& tab, int64_t j) {
  const int t = tab.t[j];
  SampleCoefs c;
  c.a = tab.sqrt_abar[t];
  c.b = tab.sqrt_one_minus_abar[t];
  c.w_t = tab.weight[t];
  c.batch_weight = c.w_t * (tab.importance ? tab.importance[j] : 1.0f) / static_cast<float>(s.n);
  c.mirror = mirrored(s, j);
  return c;
}

// The sample and chunk a block of the 1-D grid owns.
struct BlockPlace {
  int64_t sample, chunk;
};
__device__ __forceinline__ BlockPlace block_place(const DiffusionLossShape& s) {
  const int64_t chunks = (s.dim + kChunk - 1) / kChunk;
  return {blockIdx.x / chunks, blockIdx.x % chunks};
}

// grid n x chunks: x_t = a x0 + b eps.
template <class X0, bool kVec4>
__global__ void corrupt_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                               const X0* x0, float* x_t) {
  const DiffusionLossShape s = read_step_keys(keyed);
  const BlockPlace place = block_place(s);
  const int64_t j = place.sample;
  const SampleCoefs k = coefs(s, tab, j);
  const int64_t base = place.chunk * kChunk;
  float* out = x_t + j * s.dim;
  if (kVec4) {
    const int64_t i = base + threadIdx.x * kPerThread;
    if (i >= s.dim) return;
    const Normal4 e = eps4(s, j, i);
    float4 v;
    v.x = corrupt_value(k.a, k.b, x0_value<float>(s, x0, j, i + 0, k.mirror), e.v[0]);
    v.y = corrupt_value(k.a, k.b, x0_value<float>(s, x0, j, i + 1, k.mirror), e.v[1]);
    v.z = corrupt_value(k.a, k.b, x0_value<float>(s, x0, j, i + 2, k.mirror), e.v[2]);
    v.w = corrupt_value(k.a, k.b, x0_value<float>(s, x0, j, i + 3, k.mirror), e.v[3]);
    *reinterpret_cast<float4*>(out + i) = v;
  } else {
    for (int r = 0; r < kPerThread; ++r) {
      const int64_t i = base + r * kThreads + threadIdx.x;  // coalesced across the block
      if (i < s.dim)
        out[i] = corrupt_value(k.a, k.b, x0_value<float>(s, x0, j, i, k.mirror), eps1(s, j, i));
    }
  }
}

// grid n x chunks: dpred = scale (pred - target), partial[j][chunk] = sum (pred - target)^2.
template <class X0, bool kVec4>
__global__ void loss_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                            const float* pred, const X0* x0, float* dpred, float* partial) {
  __shared__ float scratch[32];
  const DiffusionLossShape s = read_step_keys(keyed);
  const BlockPlace place = block_place(s);
  const int64_t j = place.sample;
  const SampleCoefs k = coefs(s, tab, j);
  const float scale = grad_scale(k.batch_weight, s.dim);
  const bool needs_x0 = s.target != DiffusionTarget::Epsilon;
  const int64_t base = place.chunk * kChunk;
  const float* p = pred + j * s.dim;
  float* dp = dpred + j * s.dim;
  float sq = 0.0f;
  if (kVec4) {
    const int64_t i = base + threadIdx.x * kPerThread;
    if (i < s.dim) {
      const Normal4 e = eps4(s, j, i);
      const float4 pv = *reinterpret_cast<const float4*>(p + i);
      const float pr[4] = {pv.x, pv.y, pv.z, pv.w};
      float d[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float x = needs_x0 ? x0_value<float>(s, x0, j, i + r, k.mirror) : 0.0f;
        const float diff = pr[r] - target_value(s.target, k.a, k.b, x, e.v[r]);
        d[r] = scale * diff;
        sq += diff * diff;
      }
      *reinterpret_cast<float4*>(dp + i) = make_float4(d[0], d[1], d[2], d[3]);
    }
  } else {
    for (int r = 0; r < kPerThread; ++r) {
      const int64_t i = base + r * kThreads + threadIdx.x;
      if (i < s.dim) {
        const float x = needs_x0 ? x0_value<float>(s, x0, j, i, k.mirror) : 0.0f;
        const float diff = p[i] - target_value(s.target, k.a, k.b, x, eps1(s, j, i));
        dp[i] = scale * diff;
        sq += diff * diff;
      }
    }
  }
  sq = block_sum(sq, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sq;  // = partial[j][chunk]
}

// One block: per-sample sums over chunks in order, then the batch loss by a fixed tree.
__global__ void finish_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                              int chunks, const float* partial, float* per_sample, float* loss) {
  __shared__ float scratch[32];
  const DiffusionLossShape s = read_step_keys(keyed);
  float contribution = 0.0f;
  for (int64_t j = threadIdx.x; j < s.n; j += blockDim.x) {
    float sq = 0.0f;
    for (int c = 0; c < chunks; ++c) sq += partial[j * chunks + c];
    const float mse = sq / static_cast<float>(s.dim);
    const SampleCoefs k = coefs(s, tab, j);
    per_sample[j] = k.w_t * mse;
    contribution += k.batch_weight * mse;
  }
  contribution = block_sum(contribution, scratch);
  if (threadIdx.x == 0) *loss = contribution;
}

// The 16-byte path needs whole quads per sample and 16-byte aligned rows.
bool vec4_ok(const DiffusionLossShape& s, const void* a, const void* b) {
  return s.dim % 4 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

dim3 chunk_grid(const DiffusionLossShape& s) {
  CHECK(s.n * loss_chunks(s) <= 2147483647,
        "diffusion loss: " << s.n << " samples of " << s.dim
                           << " values need more blocks than a grid has");
  return dim3(static_cast<unsigned>(s.n * loss_chunks(s)));
}

}  // namespace

int64_t loss_chunks(const DiffusionLossShape& s) { return (s.dim + kChunk - 1) / kChunk; }

template <class X0>
void diffusion_corrupt(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                       const X0* x0, float* x_t) {
  if (s.n * s.dim == 0) return;
  if (vec4_ok(s, x_t, x_t))
    DDPM_LAUNCH((corrupt_kernel<X0, true>), chunk_grid(s), kThreads)(s, tab, x0, x_t);
  else
    DDPM_LAUNCH((corrupt_kernel<X0, false>), chunk_grid(s), kThreads)(s, tab, x0, x_t);
}

template <class X0>
void diffusion_loss(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                    const float* pred, const X0* x0, float* dpred, float* per_sample,
                    float* loss, float* partial) {
  if (s.n * s.dim == 0) return;
  if (vec4_ok(s, pred, dpred))
    DDPM_LAUNCH((loss_kernel<X0, true>), chunk_grid(s), kThreads)(s, tab, pred, x0, dpred, partial);
  else
    DDPM_LAUNCH((loss_kernel<X0, false>), chunk_grid(s), kThreads)(
        s, tab, pred, x0, dpred, partial);
  DDPM_LAUNCH(finish_kernel, 1, kThreads)(
      s, tab, static_cast<int>(loss_chunks(s)), partial, per_sample,
                                 loss);
}

template void diffusion_corrupt<float>(const DiffusionLossShape&,
                                       const DiffusionLossTables<float>&, const float*, float*);
template void diffusion_corrupt<uint8_t>(const DiffusionLossShape&,
                                         const DiffusionLossTables<float>&, const uint8_t*,
                                         float*);
template void diffusion_loss<float>(const DiffusionLossShape&, const DiffusionLossTables<float>&,
                                    const float*, const float*, float*, float*, float*, float*);
template void diffusion_loss<uint8_t>(const DiffusionLossShape&,
                                      const DiffusionLossTables<float>&, const float*,
                                      const uint8_t*, float*, float*, float*, float*);

}  // namespace ddpm::cuda
