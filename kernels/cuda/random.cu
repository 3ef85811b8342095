// Philox fills on the GPU.
//
// Work mapping: one thread per Philox block of four outputs (one philox4x32_10 call gives
// four words, Box-Muller turns them into four normals), written as four scalar stores so any
// n and any alignment work; a grid-stride loop covers n larger than the grid (launch.cuh).
// Limit: integer multiplies in the ten Philox rounds plus the log/sincos polynomials: this
// is compute-light and store-bound for large n.
#include <algorithm>

#include "engine/cuda_check.h"
#include "engine/philox.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/random.cuh"

namespace ddpm::cuda {

namespace {

template <bool kNormal>
__global__ void philox_fill_kernel(int64_t n, uint64_t seed, StepKey key, float* y) {
  const uint64_t stream = key.value();
  const int64_t blocks4 = (n + 3) / 4;
  DDPM_GRID_STRIDE(b, blocks4) {
    float v[4];
    if (kNormal) {
      const Normal4 r = philox_normal4(seed, stream, static_cast<uint64_t>(b));
      for (int i = 0; i < 4; ++i) v[i] = r.v[i];
    } else {
      const Philox4 r = philox_block(seed, stream, static_cast<uint64_t>(b));
      for (int i = 0; i < 4; ++i) v[i] = word_to_uniform(r.v[i]);
    }
    for (int i = 0; i < 4; ++i)
      if (4 * b + i < n) y[4 * b + i] = v[i];
  }
}

template <bool kNormal>
void launch_fill(int64_t n, uint64_t seed, StepKey stream, float* y, cudaStream_t cuda_stream) {
  if (n == 0) return;
  DDPM_LAUNCH(philox_fill_kernel<kNormal>, grid_for((n + 3) / 4), kThreads, 0, cuda_stream)(n, seed,
                                                                                  stream, y);
}

// Dropout: one thread per Philox block of four elements, like the fills above. The keep
// decision for element i is philox_uniform(seed, stream, i) >= p, the same bits as the CPU
// reference, so masks agree exactly across devices. (The first version ran one thread per
// element, each computing the whole block and keeping one word: four times the Philox work
// for the same mask.)
template <bool kBackward>
__global__ void dropout_kernel(int64_t n, float p, uint64_t seed, uint64_t stream,
                               const float* in, float* out) {
  const float keep_scale = 1.0f / (1.0f - p);
  const int64_t blocks4 = (n + 3) / 4;
  DDPM_GRID_STRIDE(b, blocks4) {
    const Philox4 r = philox_block(seed, stream, static_cast<uint64_t>(b));
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * b + k;
      if (i >= n) break;
      const bool keep = word_to_uniform(r.v[k]) >= p;
      if (kBackward) {
        // two roundings, as the CPU reference (built with -ffp-contract=off): nvcc would
        // contract `out += in * scale` into one FMA, one ulp from the CPU's sum (seen on an
        // H200); __fadd_rn is never contracted
        if (keep) out[i] = __fadd_rn(out[i], in[i] * keep_scale);
      } else {
        out[i] = keep ? in[i] * keep_scale : 0.0f;
      }
    }
  }
}

// One thread per output value; double arguments as the CPU reference (the phase t * f
// reaches ~1000 radians, where float would lose three digits).
__global__ void timestep_embedding_kernel(int64_t n, int64_t dim, const float* t, float* y) {
  const int64_t half = dim / 2;
  const double step = log(10000.0) / static_cast<double>(half - 1);
  DDPM_GRID_STRIDE(i, n * dim) {
    const int64_t b = i / dim, j = i % dim, f = j % half;
    const double arg = static_cast<double>(t[b]) * exp(-step * static_cast<double>(f));
    y[i] = static_cast<float>(j < half ? sin(arg) : cos(arg));
  }
}

}  // namespace

void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y) {
  if (n == 0) return;
  DDPM_LAUNCH(dropout_kernel<false>, grid_for((n + 3) / 4), kThreads)(n, p, seed, stream, x, y);
}

void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy, float* dx) {
  if (n == 0) return;
  DDPM_LAUNCH(dropout_kernel<true>, grid_for((n + 3) / 4), kThreads)(n, p, seed, stream, dy, dx);
}

void timestep_embedding(int64_t n, int64_t dim, const float* t, float* y) {
  if (n * dim == 0) return;
  DDPM_LAUNCH(timestep_embedding_kernel, grid_for(n * dim), kThreads)(n, dim, t, y);
}

void normal_fill(int64_t n, uint64_t seed, StepKey stream, float* y, cudaStream_t cuda_stream) {
  launch_fill<true>(n, seed, stream, y, cuda_stream);
}

void uniform_fill(int64_t n, uint64_t seed, StepKey stream, float* y, cudaStream_t cuda_stream) {
  launch_fill<false>(n, seed, stream, y, cuda_stream);
}

}  // namespace ddpm::cuda
