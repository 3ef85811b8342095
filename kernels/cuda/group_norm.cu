// Group norm on the GPU, x (N, S, C) channels-last. A group's S x C/G values are strided in
// memory: C/G contiguous channels per pixel row, rows C apart.
//
//   forward   pass 1 sums x -> mean; pass 2 sums (x - mean)^2 -> var (two passes over data
//             that stays in L1 / L2 between them: exact where one-pass E[x^2] - E[x]^2
//             loses digits); pass 3 writes y (and the fused SiLU, dropout).
//   backward  sums g = dy*gamma and g*xhat per group, then writes dx += rstd (g - mean(g) -
//             xhat mean(g xhat)) (or dx = ..., the first contribution: kernels/grad_write.h);
//             the fused GN + SiLU's first turns its dy into dh = dy silu'(h): a pass of its
//             own that writes dh (with dropout, and in v1), or recomputed in both of v2's
//             and v3's dx reads (without dropout: group_norm_silu_backward, the same bits);
//             dgamma/dbeta: sums of dy xhat and dy over the N*S rows: in v2's and v3's dx
//             pass per (sample, channel), then over the samples (with a workspace, when dx
//             is wanted), else the two-stage column sums of column_sum.cuh, a pass of their
//             own.
//
// Four mappings of the kernels onto blocks, side by side (kernel-bench memory times all;
// set_group_norm_mapping); v1-v3 here, v4 in group_norm_resident.cu, the pieces v2-v4 share
// in group_norm_slab.cuh:
//   v1 BlockPerGroup  one block per (sample, group); its threads walk the group's S x C/G
//             values in order, so a warp reads C/G-channel pieces of 32 / (C/G) rows. At the
//             CIFAR-10 model's C/G = 4 that is 16 bytes of each 32-byte sector a load
//             touches in f32 and 8 in bf16 (the neighbouring group's block reads the rest,
//             from L2 at best), and each element's address, (i / cg) * C + i % cg, is a
//             64-bit division and a remainder (nvcc -ptx, sm_90: v1's sum loop is 29
//             instructions per element with both; v2's, unrolled by 4, 26 per 4 elements).
//   v2 ChannelSlab  one block per (sample, slab of k whole groups side by side,
//             W = k C/G channels; k the fewest groups dividing G with W >= 16), and every
//             thread keeps one channel for the whole kernel: thread t reads channel t % W of
//             rows t / W, t / W + R, ... (R = 256 / W rows per pass). A warp then reads whole
//             runs of W consecutive channels (at W >= 16: whole 32-byte sectors in bf16),
//             the address advances by R C per step with no division, and gamma[c], beta[c]
//             are read once. Its grid is N G / k blocks (CIFAR-10 at batch 128, 32x32x128:
//             1,024 blocks of 16 rows x 16 channels per pass, v1's 4,096 of 256 values):
//             still several waves of an H100's 132 SMs. The fused backward's dh (elementwise)
//             takes the same thread per channel over 512-row pieces of a slab, where v1
//             divides three times per element to find its channel and group. A group wider
//             than a block (C/G > 256) has no slab: v1 takes it.
//   v3 ChannelRuns  v2's slabs, each thread keeping a run of 8 adjacent channels
//             (kRun, storage.cuh) and moving it as 16-byte words: one LDG.128 of bf16, two
//             of f32, where v2 moves 2 or 4 bytes an instruction. A slab row is W / 8
//             threads (CIFAR-10's 16-channel slabs: 2, so 128 rows a pass), the statistics
//             and dx loops unrolled by 4, so a thread has 4 words in flight. Its dropout
//             mask is the run's own two Philox blocks (no shuffles). Static counts
//             (scripts/sass_loops.py --memory, sm_90) in SASS instructions per 16 bytes a
//             thread moves, v2 -> v3, bf16 storage: forward sums 54 -> 24 and 64 -> 32, GN +
//             SiLU output 108 -> 56, dx sums 63 -> 34, dx write 50 -> 32, dh 91 -> 49 (the
//             SiLU ones with activation.cuh's __expf and __fdividef; 168 -> 117 and
//             136 -> 94 with expf and an IEEE division).
//             Needs C and W multiples of 8 and every activation 16-byte aligned; else v2.
//   v4 SlabInRegisters  v3's slabs and threads, each thread's rows kept in registers
//             between the kernel's passes, so every element is read once (x forward; x and
//             dy backward, dh recomputed once, dropout's mask too), and the sums over a
//             block's rows by shuffles over its warps' lanes (group_norm_resident.cu). For
//             maps of up to about passes x 512 / P rows; elsewhere as ByShape without it.
//   ByShape (default)  v4 where it has a plan (every map of the U-Net but the backward at
//             32x32 x 384 channels), else v3 where each of its threads has at least
//             kMinRunPasses passes of rows to make, else v2. A run's 8 channels take 8 of
//             v2's threads' work, so a slab row is 8 times fewer threads and a pass 8 times
//             more rows: on small maps most of v3's threads have a pass or none. Measured on
//             an H200 (docs/gpu-report.md, batch 128, fp32 and bf16 storage): at 32x32 (8 or
//             12 passes) v3 was 1.2-1.6x v2; at 16x16 (2 passes) 0.60-0.79x, at 8x8 (half a
//             pass) 0.44-0.47x. (v4 is not yet measured.)
// All sum in a fixed order (v1: block trees; v2, v3: per channel its rows' partial sums in
// row order, then per group its channels in order; v4: group_norm_resident.cu): the same
// bits every run. No atomics. v1-v3's plans do not depend on the storage type, so f32 and
// bf16 storage sum alike (v4's keep twice the rows of bf16 in the same registers).
// Limits: memory-bound (v1-v3: 3 reads + 1 write of x forward; v4: 1 + 1).
// Storage: every kernel is a template on the activations' storage type T (x, y, dy, dh, dx):
// f32, or bf16 bits (uint16_t, kernels/bf16.h) read into fp32 and rounded once when stored.
// Statistics, affine parameters and their gradients stay fp32, and so does every sum. The
// bf16 versions move half the bytes (the point: these kernels are bandwidth-bound).
#include <initializer_list>
#include <type_traits>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "engine/philox.h"
#include "kernels/bf16.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/group_norm_resident.cuh"
#include "kernels/cuda/group_norm_slab.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"  // load / store: activations in T, arithmetic in fp32

namespace ddpm::cuda {

namespace {

using namespace group_norm_detail;  // group_norm_slab.cuh

// ---- v1: a block per (sample, group); dh a thread per element ----------------------------

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
    const float h = norm_affine(load(xs, off), mu, r, gamma[c], beta[c]);
    const float v = kSilu ? silu_value(h) : h;
    if (drop.p > 0.0f)
      store(ys, off, dropout_keeps(drop, n * s.s * s.c + c0 + off) ? v * keep_scale : 0.0f);
    else
      store(ys, off, v);
  }
}

// dh = dy' * silu'(h), h recomputed. One thread per element (grid-stride).
template <class T>
__global__ void group_norm_silu_dh_kernel(GroupNormShape s, const T* x, const float* gamma,
                                          const float* beta, const float* mean, const float* rstd,
                                          const T* dy, T* dh, DropoutSpec keyed) {
  const DropoutSpec drop = read_key(keyed);
  const int64_t cg = s.c / s.groups, total = s.n * s.s * s.c;
  const float keep_scale = 1.0f / (1.0f - drop.p);
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c, g = (i / (s.s * s.c)) * s.groups + c / cg;
    const float h = norm_affine(load(x, i), mean[g], rstd[g], gamma[c], beta[c]);
    store(dh, i, silu_grad(h, load(dy, i), drop, keep_scale,
                           drop.p > 0.0f && dropout_keeps(drop, i)));
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

// ---- v2 and v3: a block per (sample, channel slab) --------------------------------------

// Dropout's mask, four elements to a Philox block. The keep decision of element i is word
// i % 4 of Philox block i / 4 (philox_uniform: the CPU's bits), so a thread per element that
// computes its block keeps one word of four: four times the Philox rounds the mask needs
// (~110 PTX instructions a block, 64-bit multiplies and shifts, against the ~40 an element
// a memory-bound kernel moving 4 bytes may spend at an H100's issue rate; the dropout op's
// own kernel already took a block per thread). A v2 slab thread's elements are one channel,
// rows R apart, and the block of its element holds the same row's channels c - c % 4 .. + 3:
// the four lanes of its "quad" when the slab has quads. So each lane of a quad computes the
// block of one of four successive row steps, and four shuffles within the quad hand every
// lane its own word of each: in step m lane q reads lane s = (q + m) % 4, which offers word
// (s - m) % 4 = q of its block. keep[k] is the decision for this lane's element i + k step
// (past the thread's end the words are computed and not used). The whole warp calls it
// together (full-warp shuffles of width 4: a lane reads only its quad).
__device__ __forceinline__ void quad_keeps(const DropoutSpec& d, int64_t i, int64_t step,
                                           bool (&keep)[4]) {
  const int q = static_cast<int>(threadIdx.x % 4);
  const Philox4 b =
      philox_block(d.seed, d.stream.base, static_cast<uint64_t>(i - q + q * step) / 4);
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int w = (q - m) & 3, source = (q + m) & 3;
    const uint32_t offered = w == 0 ? b.v[0] : w == 1 ? b.v[1] : w == 2 ? b.v[2] : b.v[3];
    keep[source] = word_to_uniform(__shfl_sync(0xffffffffu, offered, source, 4)) >= d.p;
  }
}

// Calls f(i, keep) for each of t's elements i in order, keep[e] the dropout decision of
// element i + e of its run (all true when drop.p is 0). v3: a Philox block per four elements
// of each run (run_keeps). v2: with the slab's quads, a Philox block per four elements
// (quad_keeps), else one per element; the quads' loop runs alike on every lane of the warp
// (a warp holds rows of unequal lengths, and idle threads; the shuffles need every lane):
// as many rounds of four as the warp's longest row needs.
template <int kN, class F>
__device__ __forceinline__ void for_each_with_mask(const SlabThread& t, const GroupSlab& p,
                                                   const DropoutSpec& drop, F f) {
  bool keep[kN];
  if constexpr (kN == kRun) {
    if (drop.p > 0.0f) {
      for (int64_t i = t.first; i < t.end; i += t.step) {
        run_keeps(drop, i, keep);
        f(i, keep);
      }
    } else {
#pragma unroll
      for (int e = 0; e < kN; ++e) keep[e] = true;
#pragma unroll 4
      for (int64_t i = t.first; i < t.end; i += t.step) f(i, keep);
    }
  } else if (drop.p > 0.0f && p.quads) {
    const int64_t count = t.first < t.end ? (t.end - t.first + t.step - 1) / t.step : 0;
    for (int64_t k0 = 0; __any_sync(0xffffffffu, k0 < count); k0 += 4) {
      bool keeps[4];
      quad_keeps(drop, t.first + k0 * t.step, t.step, keeps);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        keep[0] = keeps[k];
        if (k0 + k < count) f(t.first + (k0 + k) * t.step, keep);
      }
    }
  } else {
    for (int64_t i = t.first; i < t.end; i += t.step) {
      keep[0] = drop.p <= 0.0f || dropout_keeps(drop, i);
      f(i, keep);
    }
  }
}

// Shared memory of slab_group_sums: kValues sums at once, kN partials per thread (one per
// channel of its run).
template <int kValues, int kN>
struct SlabSums {
  float partial[kValues][kThreads * kN];
  float channel[kValues][kThreads];
  float group[kValues][kThreads];
};

// The sums over each group of the slab of v (per thread, one value per channel of its run),
// into sums.group[value][group within the slab], which every thread may read on return (and
// sums.channel[value][channel within the slab], the sums per channel). Fixed order: per
// channel its rows' partials in row order, per group its channels in order.
template <int kValues, int kN>
__device__ void slab_group_sums(const float (&v)[kValues][kN], const SlabThread& t,
                                const GroupNormShape& s, const GroupSlab& p,
                                SlabSums<kValues, kN>& sums) {
  if (t.active) {
    for (int q = 0; q < kValues; ++q) {
#pragma unroll
      for (int e = 0; e < kN; ++e) sums.partial[q][t.r0 * p.width + t.j + e] = v[q][e];
    }
  }
  __syncthreads();
  if (threadIdx.x < p.width) {
    for (int q = 0; q < kValues; ++q) {
      float acc = 0.0f;
      for (int64_t r = 0; r < p.rows_per_pass; ++r)
        acc += sums.partial[q][r * p.width + threadIdx.x];
      sums.channel[q][threadIdx.x] = acc;
    }
  }
  __syncthreads();
  add_up_groups(sums.channel, sums.group, s, p, nullptr);
  __syncthreads();
}

// Forward: mean and rstd of each group, then y = (x - mean) rstd gamma + beta (then SiLU,
// then dropout), as the first mapping's kernel. kN: channels per thread (v2 1, v3 kRun).
template <bool kSilu, int kN, class T>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_forward_kernel(GroupNormShape s, GroupSlab p, const T* x,  // x (N, S, C)
                                   const float* gamma, const float* beta,      // (C)
                                   T* y, float* mean, float* rstd,  // y (N, S, C); (N, G)
                                   DropoutSpec keyed) {
  __shared__ SlabSums<1, kN> sums;
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, s.s);
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  float v[1][kN] = {}, xv[kN];
#pragma unroll 4
  for (int64_t i = t.first; i < t.end; i += t.step) {
    load_run(x, i, xv);
#pragma unroll
    for (int e = 0; e < kN; ++e) v[0][e] += xv[e];
  }
  slab_group_sums(v, t, s, p, sums);
  float mu[kN], r[kN];
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    mu[e] = sums.group[0][t.group(e, cg)] / count;
    v[0][e] = 0.0f;
  }
#pragma unroll 4
  for (int64_t i = t.first; i < t.end; i += t.step) {
    load_run(x, i, xv);
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      const float d = xv[e] - mu[e];
      v[0][e] += d * d;
    }
  }
  slab_group_sums(v, t, s, p, sums);
  float gm[kN], bt[kN];
  run_statistics(t, s, sums.group[0], mu, gamma, beta, mean, rstd, r, gm, bt);
  const float keep_scale = 1.0f / (1.0f - drop.p);  // as the dropout op computes it
  for_each_with_mask<kN>(t, p, drop, [&](int64_t i, const bool (&keep)[kN]) {
    float out[kN];
    load_run(x, i, xv);
    normalized_run<kSilu>(xv, mu, r, gm, bt, drop, keep_scale, keep, out);
    store_run(y, i, out);
  });
}

// The gradient at the norm's output for elements i .. i + kN - 1 into dv, x's values in xv:
// dy itself (the norm's own backward), or with kSiluIn (the fused GN + SiLU without
// dropout) dh = dy silu'(h), h recomputed from x, rounded as storage T holds it: the bits
// group_norm_silu_dh would have written to memory and this pass read back.
template <bool kSiluIn, int kN, class T>
__device__ __forceinline__ void norm_output_grad(const T* x, const T* dy, int64_t i,
                                                 const float (&mu)[kN], const float (&r)[kN],
                                                 const float (&gm)[kN], const float (&bt)[kN],
                                                 float (&xv)[kN], float (&dv)[kN]) {
  load_run(dy, i, dv);
  load_run(x, i, xv);
  if constexpr (kSiluIn) {
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      const float h = norm_affine(xv[e], mu[e], r[e], gm[e], bt[e]);
      dv[e] = as_stored<T>(dv[e] * silu_derivative(h));
    }
  }
}

// dx from dy (the gradient at the norm's output) as the first mapping's dx kernel: per group
// mean(g) and mean(g xhat) with g = dy gamma, then dx (+)= rstd (g - mean(g) - xhat
// mean(g xhat)). kSampleSums: from the same reads, each (sample, channel)'s sums of dy xhat
// and dy over the sample's rows into sample_sums (N, 2, C), which dgamma and dbeta add up
// over the samples (param_grads_kernel): no third pass over x and dy for them. kSiluIn: dy
// is the gradient at the fused SiLU's output (no dropout), and both passes recompute dh
// from it (norm_output_grad; beta is read only then): the fused op's whole backward in one
// kernel, with the same bits as the dh kernel and this one, where those write dh and read
// it back twice.
template <class T, bool kSampleSums, int kN, bool kSiluIn = false>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_dx_kernel(GroupNormShape s, GroupSlab p, const T* x,  // x (N, S, C)
                              const float* gamma, const float* beta,     // (C)
                              const float* mean, const float* rstd,      // (N, G)
                              const T* dy, T* dx, bool add,  // dy, dx (N, S, C)
                              float* sample_sums) {          // (N, 2, C) or null
  constexpr int kValues = kSampleSums ? 4 : 2;
  __shared__ SlabSums<kValues, kN> sums;
  const SlabThread t(s, p, s.s);
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  float mu[kN], r[kN], gm[kN], bt[kN];
  run_parameters(t, cg, mean, rstd, gamma, kSiluIn ? beta : nullptr, mu, r, gm, bt);
  float v[kValues][kN] = {};  // sums of g, of g xhat (and of dy xhat, of dy), per channel
  float dv[kN], xv[kN];
#pragma unroll 4
  for (int64_t i = t.first; i < t.end; i += t.step) {
    norm_output_grad<kSiluIn>(x, dy, i, mu, r, gm, bt, xv, dv);
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      const float g = dv[e] * gm[e], xc = xv[e] - mu[e];
      v[0][e] += g;
      v[1][e] = fmaf(g * xc, r[e], v[1][e]);  // fmaf: see norm_affine
      if constexpr (kSampleSums) {
        v[2][e] = fmaf(dv[e] * xc, r[e], v[2][e]);
        v[3][e] += dv[e];
      }
    }
  }
  slab_group_sums(v, t, s, p, sums);
  if constexpr (kSampleSums)
    write_sample_sums(t, s, p, sums.channel[2], sums.channel[3], sample_sums);
  float mean_g[kN], mean_gx[kN];
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    mean_g[e] = sums.group[0][t.group(e, cg)] / count;
    mean_gx[e] = sums.group[1][t.group(e, cg)] / count;
  }
#pragma unroll 4
  for (int64_t i = t.first; i < t.end; i += t.step) {
    float out[kN];
    norm_output_grad<kSiluIn>(x, dy, i, mu, r, gm, bt, xv, dv);
    if (add) load_run(dx, i, out);
    input_grad_run(xv, dv, mu, r, gm, mean_g, mean_gx, add, out);
    store_run(dx, i, out);
  }
}

// dgamma[c] += sum over n of sample_sums[n, 0, c] (dy xhat), dbeta[c] += of [n, 1, c] (dy).
// A block takes 32 of the 2C columns (dgamma's, then dbeta's), one a lane, so each sample's
// row of them is one coalesced read, and kParamWarps warps: warp w adds samples w, w + 8, ...
// in order, then the first warp adds the 8 warps' sums in warp order (fixed: the same bits
// every run). A thread's chain of dependent loads is n / 8 long (16 at batch 128) where one
// thread a column, the first version, walked all n in turn.
constexpr int kParamWarps = 8;

__global__ void __launch_bounds__(kParamWarps * 32)
    group_norm_param_grads_kernel(int64_t n, int64_t c, const float* sample_sums,  // (N, 2, C)
                                  float* dgamma, float* dbeta) {                  // (C) or null
  __shared__ float warp_sums[kParamWarps][32];
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int64_t column = blockIdx.x * 32 + lane;  // of the 2C
  const bool inside = column < 2 * c;
  const int64_t k = inside ? column / c : 0, ch = inside ? column % c : 0;
  float acc = 0.0f;
  if (inside) {
    for (int64_t j = warp; j < n; j += kParamWarps) acc += sample_sums[(j * 2 + k) * c + ch];
  }
  warp_sums[warp][lane] = acc;
  __syncthreads();
  float* out = k == 0 ? dgamma : dbeta;
  if (warp == 0 && inside && out != nullptr) {
    float total = 0.0f;
    for (int w = 0; w < kParamWarps; ++w) total += warp_sums[w][lane];
    out[ch] += total;
  }
}

// dgamma and dbeta from the per-sample sums a dx pass wrote (v2, v3, v4).
void add_param_grads(const GroupNormShape& s, const float* sample_sums, float* dgamma,
                     float* dbeta) {
  const auto blocks = static_cast<unsigned>((2 * s.c + 31) / 32);
  DDPM_LAUNCH(group_norm_param_grads_kernel, blocks, kParamWarps * 32)(s.n, s.c, sample_sums,
                                                                       dgamma, dbeta);
}

// dh = dy' * silu'(h) as v1's dh kernel, over a slab's rows [y B, y B + B): the groups' mean
// and rstd, gamma and beta read once per thread, no division per element.
template <int kN, class T>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_silu_dh_kernel(GroupNormShape s, GroupSlab p, int64_t rows_per_block,
                                   const T* x,  // x (N, S, C)
                                   const float* gamma, const float* beta,
                                   const float* mean, const float* rstd, const T* dy,
                                   T* dh, DropoutSpec keyed) {  // dy, dh (N, S, C)
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, rows_per_block);
  const int64_t cg = s.channels_per_group();
  float mu[kN], r[kN], gm[kN], bt[kN];
  run_parameters(t, cg, mean, rstd, gamma, beta, mu, r, gm, bt);
  const float keep_scale = 1.0f / (1.0f - drop.p);
  for_each_with_mask<kN>(t, p, drop, [&](int64_t i, const bool (&keep)[kN]) {
    float xv[kN], dv[kN], out[kN];
    load_run(x, i, xv);
    load_run(dy, i, dv);
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      const float h = norm_affine(xv[e], mu[e], r[e], gm[e], bt[e]);
      out[e] = silu_grad(h, dv[e], drop, keep_scale, keep[e]);
    }
    store_run(dh, i, out);
  });
}

// Rows per block of the dh kernel: 32 passes of the block's threads, so 32 runs a thread
// against a setup of a few 64-bit divisions (at 16 channels a slab, v2's 512 rows: the
// CIFAR-10 model's 32x32 maps in 2 pieces a slab; v3's 4,096), more where the grid's y
// would pass 65,535.
int64_t dh_rows_per_block(const GroupNormShape& s, const GroupSlab& p) {
  const int64_t rows = 32 * p.rows_per_pass, fit = (s.s + 65534) / 65535;
  return rows > fit ? rows : fit;
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

GroupNormMapping g_mapping = GroupNormMapping::ByShape;

// ByShape's least number of passes of rows for a thread of v3 (the opening comment): v3
// won at 8 and lost at 2 on an H200; 4 splits the two.
constexpr int64_t kMinRunPasses = 4;

// Whether ByShape takes v3's runs for shape s (where the rows allow runs at all).
bool runs_pay(const GroupNormShape& s) {
  const GroupSlab p = plan_group_slab(s, true);
  return p.run == kRun && s.s >= kMinRunPasses * p.rows_per_pass;
}

// Whether the mapping set asks for v3's runs on shape s (v4 and ByShape, where v4 does not
// take s, fall back alike).
bool runs_wanted(const GroupNormShape& s) {
  return g_mapping == GroupNormMapping::ChannelRuns ||
         ((g_mapping == GroupNormMapping::ByShape ||
           g_mapping == GroupNormMapping::SlabInRegisters) &&
          runs_pay(s));
}

// Whether v4 (group_norm_resident.cu) takes a kernel on shape s with `passes` rows a thread,
// on the activations `tensors` (null: absent): the mapping set is v4 or ByShape, v4 has a
// plan for s, and every tensor's rows allow runs.
template <class T>
bool resident_takes(const GroupNormShape& s, int passes,
                    std::initializer_list<const T*> tensors) {
  if (g_mapping != GroupNormMapping::SlabInRegisters && g_mapping != GroupNormMapping::ByShape)
    return false;
  for (const T* t : tensors)
    if (!rows_run(s.c, t)) return false;
  return plan_resident(s, passes).groups > 0;
}
template <class T>
bool resident_forward_takes(const GroupNormShape& s, std::initializer_list<const T*> tensors) {
  return resident_takes(s, resident_passes<T>(kResidentForwardBytes), tensors);
}
template <class T>
bool resident_dx_takes(const GroupNormShape& s, std::initializer_list<const T*> tensors) {
  return resident_takes(s, resident_passes<T>(kResidentBackwardBytes), tensors);
}

// The slab of shape s under the chosen mapping, for kernels on the activations `tensors`
// (null: absent): v3's runs when the mapping asks for them (ByShape: where they pay) and
// every tensor's rows allow them (storage.cuh's rows_run), else v2's thread per channel;
// groups = 0: v1 runs.
template <class T>
GroupSlab slab_for(const GroupNormShape& s, std::initializer_list<const T*> tensors) {
  if (g_mapping == GroupNormMapping::BlockPerGroup) return GroupSlab{};
  bool runs = runs_wanted(s);
  for (const T* t : tensors) runs = runs && rows_run(s.c, t);
  return plan_group_slab(s, runs);
}

// f(std::integral_constant<int, kN>) with kN the slab's channels per thread (1 or kRun): the
// kernels' template argument.
template <class F>
void with_run(const GroupSlab& slab, F f) {
  if (slab.run == kRun)
    f(std::integral_constant<int, kRun>{});
  else
    f(std::integral_constant<int, 1>{});
}

// The entries, one template per storage type.
template <class T>
void forward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta, T* y,
             float* mean, float* rstd, bool silu, const DropoutSpec& dropout) {
  if (s.n * s.groups == 0) return;
  if (resident_forward_takes<T>(s, {x, y})) {
    resident_forward(s, x, gamma, beta, y, mean, rstd, silu, dropout);
    return;
  }
  const GroupSlab slab = slab_for<T>(s, {x, y});
  if (slab.groups > 0) {
    const auto blocks = static_cast<unsigned>(s.n * (s.groups / slab.groups));
    with_run(slab, [&](auto run) {
      constexpr int kN = decltype(run)::value;
      if (silu)
        DDPM_LAUNCH((group_norm_slab_forward_kernel<true, kN, T>), blocks, kThreads)(
            s, slab, x, gamma, beta, y, mean, rstd, dropout);
      else
        DDPM_LAUNCH((group_norm_slab_forward_kernel<false, kN, T>), blocks, kThreads)(
            s, slab, x, gamma, beta, y, mean, rstd, dropout);
    });
    return;
  }
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
  const GroupSlab slab = slab_for<T>(s, {x, dy, dh});
  if (slab.groups > 0) {
    const int64_t rows = dh_rows_per_block(s, slab);
    const dim3 grid(static_cast<unsigned>(s.n * (s.groups / slab.groups)),
                    static_cast<unsigned>((s.s + rows - 1) / rows));
    with_run(slab, [&](auto run) {
      DDPM_LAUNCH((group_norm_slab_silu_dh_kernel<decltype(run)::value, T>), grid, kThreads)(
          s, slab, rows, x, gamma, beta, mean, rstd, dy, dh, dropout);
    });
    return;
  }
  DDPM_LAUNCH(group_norm_silu_dh_kernel<T>, grid_for(total), kThreads)(
      s, x, gamma, beta, mean, rstd, dy, dh, dropout);
}

template <class T>
void backward(const GroupNormShape& s, const T* x, const float* gamma, const float* mean,
              const float* rstd, const T* dy, T* dx, float* dgamma, float* dbeta,
              float* workspace, GradWrite dx_write) {
  if (s.n * s.groups == 0) return;
  const bool add = dx_write == GradWrite::Accumulate;
  const GroupSlab slab = slab_for<T>(s, {x, dy, dx});
  // v2 and v3 with a workspace sum dgamma's and dbeta's terms per sample in their dx pass;
  // else a column-sum pass over x and dy gives them
  const bool params_in_dx = dx && slab.groups > 0 && workspace && (dgamma || dbeta);
  if (dx && resident_dx_takes<T>(s, {x, dy, dx})) {
    resident_dx(s, x, gamma, nullptr, mean, rstd, dy, dx, add, params_in_dx ? workspace : nullptr,
                false, DropoutSpec{});
  } else if (dx && slab.groups > 0) {
    const auto blocks = static_cast<unsigned>(s.n * (s.groups / slab.groups));
    with_run(slab, [&](auto run) {
      constexpr int kN = decltype(run)::value;
      if (params_in_dx)
        DDPM_LAUNCH((group_norm_slab_dx_kernel<T, true, kN>), blocks, kThreads)(
            s, slab, x, gamma, nullptr, mean, rstd, dy, dx, add, workspace);
      else
        DDPM_LAUNCH((group_norm_slab_dx_kernel<T, false, kN>), blocks, kThreads)(
            s, slab, x, gamma, nullptr, mean, rstd, dy, dx, add, nullptr);
    });
  } else if (dx) {
    DDPM_LAUNCH(group_norm_dx_kernel<T>, static_cast<unsigned>(s.n * s.groups), kThreads)(
        s, x, gamma, mean, rstd, dy, dx, add);
  }
  if (params_in_dx)
    add_param_grads(s, workspace, dgamma, dbeta);
  else if (dgamma || dbeta)
    column_sums<2>(param_grad_plan(s, workspace != nullptr),
                   ParamGradTerms<T>{s, x, mean, rstd, dy}, workspace, dgamma, dbeta);
}

// The fused GN + SiLU's backward (group_norm.cuh): one dx kernel that recomputes dh (v4's,
// which regenerates dropout's mask too, else v2's or v3's, without dropout), then dgamma and
// dbeta from its per-sample sums.
template <class T>
void silu_backward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
                   const float* mean, const float* rstd, const T* dy, T* dx, float* dgamma,
                   float* dbeta, float* workspace, GradWrite dx_write,
                   const DropoutSpec& dropout) {
  const bool params = dgamma || dbeta;
  CHECK(group_norm_silu_backward_fuses(s, dropout.p, sizeof(T) == 2, {x, dy, dx}) && dx &&
            (workspace || !params),
        "group_norm_silu_backward: shape (" << s.n << ", " << s.s << ", " << s.c << ") in "
                                            << s.groups << " groups with dropout " << dropout.p
                                            << " has no fused kernel under the chosen mapping, "
                                            << "or dx or the workspace is null");
  if (s.n * s.groups == 0) return;
  const bool add = dx_write == GradWrite::Accumulate;
  if (resident_dx_takes<T>(s, {x, dy, dx})) {
    resident_dx(s, x, gamma, beta, mean, rstd, dy, dx, add, params ? workspace : nullptr, true,
                dropout);
    if (params) add_param_grads(s, workspace, dgamma, dbeta);
    return;
  }
  const GroupSlab slab = slab_for<T>(s, {x, dy, dx});
  const auto blocks = static_cast<unsigned>(s.n * (s.groups / slab.groups));
  with_run(slab, [&](auto run) {
    constexpr int kN = decltype(run)::value;
    if (params)
      DDPM_LAUNCH((group_norm_slab_dx_kernel<T, true, kN, true>), blocks, kThreads)(
          s, slab, x, gamma, beta, mean, rstd, dy, dx, add, workspace);
    else
      DDPM_LAUNCH((group_norm_slab_dx_kernel<T, false, kN, true>), blocks, kThreads)(
          s, slab, x, gamma, beta, mean, rstd, dy, dx, add, nullptr);
  });
  if (params) add_param_grads(s, workspace, dgamma, dbeta);
}

}  // namespace

namespace {
// v4's backward on shape s for tensors of T at `tensors` (null: not checked)
template <class T>
bool resident_dx_takes_any(const GroupNormShape& s, std::initializer_list<const void*> tensors) {
  bool aligned = true;
  for (const void* t : tensors) aligned = aligned && rows_run(s.c, static_cast<const T*>(t));
  return aligned && resident_dx_takes<T>(s, {});
}
}  // namespace

bool group_norm_silu_backward_fuses(const GroupNormShape& s, float dropout_p, bool bf16,
                                    std::initializer_list<const void*> tensors) {
  if (bf16 ? resident_dx_takes_any<uint16_t>(s, tensors) : resident_dx_takes_any<float>(s, tensors))
    return true;
  return dropout_p <= 0.0f && g_mapping != GroupNormMapping::BlockPerGroup &&
         plan_group_slab(s, false).groups > 0;
}

void group_norm_silu_backward(const GroupNormShape& s, const float* x, const float* gamma,
                              const float* beta, const float* mean, const float* rstd,
                              const float* dy, float* dx, float* dgamma, float* dbeta,
                              float* workspace, GradWrite dx_write, const DropoutSpec& dropout) {
  silu_backward(s, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, workspace, dx_write,
                dropout);
}

void group_norm_silu_backward_bf16(const GroupNormShape& s, const uint16_t* x,
                                   const float* gamma, const float* beta, const float* mean,
                                   const float* rstd, const uint16_t* dy, uint16_t* dx,
                                   float* dgamma, float* dbeta, float* workspace,
                                   GradWrite dx_write, const DropoutSpec& dropout) {
  silu_backward(s, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, workspace, dx_write,
                dropout);
}

void set_group_norm_mapping(GroupNormMapping m) { g_mapping = m; }
GroupNormMapping group_norm_mapping() { return g_mapping; }

GroupNormMapping group_norm_mapping_for(const GroupNormShape& s) {
  if (resident_forward_takes<uint16_t>(s, {})) return GroupNormMapping::SlabInRegisters;
  if (g_mapping == GroupNormMapping::BlockPerGroup || plan_group_slab(s, false).groups == 0)
    return GroupNormMapping::BlockPerGroup;
  return plan_group_slab(s, runs_wanted(s)).run == kRun ? GroupNormMapping::ChannelRuns
                                                         : GroupNormMapping::ChannelSlab;
}

int64_t group_norm_backward_workspace(const GroupNormShape& s) {
  const int64_t column_sums = param_grad_plan(s, true).workspace_floats(2);
  const int64_t sample_sums = 2 * s.n * s.c;  // v2 and v3: (N, 2, C)
  return column_sums > sample_sums ? column_sums : sample_sums;
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
