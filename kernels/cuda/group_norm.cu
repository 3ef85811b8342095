// Group norm on the GPU, x (N, S, C) channels-last. A group's S x C/G values are strided in
// memory: C/G contiguous channels per pixel row, rows C apart.
//
//   forward   pass 1 sums x -> mean; pass 2 sums (x - mean)^2 -> var (two passes over data
//             that stays in L1 / L2 between them: exact where one-pass E[x^2] - E[x]^2
//             loses digits); pass 3 writes y (and the fused SiLU, dropout).
//   backward  sums g = dy*gamma and g*xhat per group, then writes dx += rstd (g - mean(g) -
//             xhat mean(g xhat)) (or dx = ..., the first contribution: kernels/grad_write.h);
//             dgamma/dbeta: sums of dy xhat and dy over the N*S rows: in v2's dx pass per
//             (sample, channel), then over the samples (with a workspace, when dx is
//             wanted), else the two-stage column sums of column_sum.cuh, a pass of their own.
//
// Two mappings of the kernels onto blocks, side by side (kernel-bench memory times both;
// set_group_norm_mapping):
//   v1 BlockPerGroup  one block per (sample, group); its threads walk the group's S x C/G
//             values in order, so a warp reads C/G-channel pieces of 32 / (C/G) rows. At the
//             CIFAR-10 model's C/G = 4 that is 16 bytes of each 32-byte sector a load
//             touches in f32 and 8 in bf16 (the neighbouring group's block reads the rest,
//             from L2 at best), and each element's address, (i / cg) * C + i % cg, is a
//             64-bit division and a remainder (nvcc -ptx, sm_90: v1's sum loop is 29
//             instructions per element with both; v2's, unrolled by 4, 26 per 4 elements).
//   v2 ChannelSlab (default)  one block per (sample, slab of k whole groups side by side,
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
// Both sum in a fixed order (v1: block trees; v2: per channel its rows' partial sums in row
// order, then per group its channels in order): the same bits every run. No atomics. The
// plans do not depend on the storage type, so f32 and bf16 storage sum alike.
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

// The fused backward's dh of an element: dy' silu'(h), dy' = dy through dropout's backward
// (`keep`: the element's regenerated mask bit) when drop.p > 0, else dy.
__device__ __forceinline__ float silu_grad(float h, float dy, const DropoutSpec& drop,
                                           float keep_scale, bool keep) {
  if (drop.p > 0.0f) dy = keep ? dy * keep_scale : 0.0f;
  const float sig = 1.0f / (1.0f + expf(-h));
  return dy * sig * (1.0f + h * (1.0f - sig));
}

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
    const float h = (load(xs, off) - mu) * r * gamma[c] + beta[c];
    const float v = kSilu ? h / (1.0f + expf(-h)) : h;
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
    const float h = (load(x, i) - mean[g]) * rstd[g] * gamma[c] + beta[c];
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

// ---- v2: a block per (sample, channel slab) ---------------------------------------------

// At least 16 channels per slab row: a whole 32-byte sector of bf16 (64 bytes of f32) per
// row piece; wider slabs mean fewer, longer blocks for no gain in sectors.
constexpr int64_t kMinSlabChannels = 16;

// A block's slab: `groups` whole groups side by side, `width` channels, `rows_per_pass` pixel
// rows read per step of the block's threads. groups = 0: no slab fits (C/G > kThreads).
// quads: C and the width are multiples of 4, so the four channels of every Philox block of
// a row are four adjacent threads of one row of the slab (quad_keeps below).
struct GroupSlab {
  int64_t groups = 0, width = 0, rows_per_pass = 0;
  bool quads = false;
};

// The fewest groups k dividing G with k C/G >= kMinSlabChannels and at most kThreads
// channels; else (no such k) the widest slab of at most kThreads channels.
GroupSlab plan_group_slab(const GroupNormShape& s) {
  const int64_t cg = s.channels_per_group();
  GroupSlab p;
  for (int64_t k = 1; k <= s.groups && k * cg <= kThreads; ++k) {
    if (s.groups % k != 0) continue;
    p.groups = k;
    if (k * cg >= kMinSlabChannels) break;
  }
  p.width = p.groups * cg;
  p.rows_per_pass = p.width > 0 ? kThreads / p.width : 0;
  p.quads = p.width > 0 && p.width % 4 == 0 && s.c % 4 == 0;
  return p;
}

// What one thread of a slab block does: channel c of sample n, for the whole kernel. Block
// (x, y) is slab x % (G / k) of sample x / (G / k), rows [y B, y B + B) of it (B =
// rows_per_block: all S rows in the statistics kernels, whose grids have one y). The
// thread's elements are the flat indices first, first + step, ... below end (rows y B + r0,
// + R, ..., step = R C). The kThreads % W threads left over are idle: no elements (first =
// end), zeros in the sums.
struct SlabThread {
  int64_t n, c, stat;        // the sample; the channel; the (n, group) index of mean, rstd
  int64_t first, end, step;  // the elements
  int64_t group;             // within the slab
  bool writes_stats;         // the first thread of its group: stores mean and rstd
  __device__ SlabThread(const GroupNormShape& s, const GroupSlab& p, int64_t rows_per_block) {
    const int64_t cg = s.channels_per_group(), slabs = s.groups / p.groups;
    n = blockIdx.x / slabs;
    const int64_t g0 = (blockIdx.x % slabs) * p.groups;
    const int64_t j = threadIdx.x % p.width, r0 = threadIdx.x / p.width;
    const int64_t row0 = blockIdx.y * rows_per_block;
    const int64_t rows_end = row0 + rows_per_block < s.s ? row0 + rows_per_block : s.s;
    group = j / cg;
    c = g0 * cg + j;
    stat = n * s.groups + g0 + group;
    step = p.rows_per_pass * s.c;
    end = (n * s.s + rows_end) * s.c;
    first = r0 < p.rows_per_pass ? (n * s.s + row0 + r0) * s.c + c : end;
    writes_stats = r0 == 0 && j % cg == 0;
  }
};

// Dropout's mask, four elements to a Philox block. The keep decision of element i is word
// i % 4 of Philox block i / 4 (philox_uniform: the CPU's bits), so a thread per element that
// computes its block keeps one word of four: four times the Philox rounds the mask needs
// (~110 PTX instructions a block, 64-bit multiplies and shifts, against the ~40 an element
// a memory-bound kernel moving 4 bytes may spend at an H100's issue rate; the dropout op's
// own kernel already took a block per thread). A slab thread's elements are one channel, rows R apart, and the block of its
// element holds the same row's channels c - c % 4 .. + 3: the four lanes of its "quad" when
// the slab has quads. So each lane of a quad computes the block of one of four successive
// row steps, and four shuffles within the quad hand every lane its own word of each: in
// step m lane q reads lane s = (q + m) % 4, which offers word (s - m) % 4 = q of its block.
// keep[k] is the decision for this lane's element i + k step (past the thread's end the
// words are computed and not used). The whole warp calls it together (full-warp shuffles
// of width 4: a lane reads only its quad).
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

// Calls f(i, keep) for each of t's elements i in order, keep the element's dropout decision
// (true when drop.p is 0): with the slab's quads, a Philox block per four elements
// (quad_keeps), else one per element. The quads' loop runs alike on every lane of the warp
// (a warp holds rows of unequal lengths, and idle threads; the shuffles need every lane):
// as many rounds of four as the warp's longest row needs.
template <class F>
__device__ __forceinline__ void for_each_with_mask(const SlabThread& t, const GroupSlab& p,
                                                   const DropoutSpec& drop, F f) {
  if (drop.p > 0.0f && p.quads) {
    const int64_t count = t.first < t.end ? (t.end - t.first + t.step - 1) / t.step : 0;
    for (int64_t k0 = 0; __any_sync(0xffffffffu, k0 < count); k0 += 4) {
      bool keep[4];
      quad_keeps(drop, t.first + k0 * t.step, t.step, keep);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k0 + k < count) f(t.first + (k0 + k) * t.step, keep[k]);
    }
  } else {
    for (int64_t i = t.first; i < t.end; i += t.step)
      f(i, drop.p <= 0.0f || dropout_keeps(drop, i));
  }
}

// Shared memory of slab_group_sums: kValues sums at once, one partial per thread.
template <int kValues>
struct SlabSums {
  float partial[kValues][kThreads];
  float channel[kValues][kThreads];
  float group[kValues][kThreads];
};

// The sums over each group of the slab of v (one value per thread, of its channel), into
// sums.group[value][group within the slab], which every thread may read on return. Fixed
// order: per channel its rows' partials in row order, per group its channels in order.
template <int kValues>
__device__ void slab_group_sums(const float (&v)[kValues], const GroupNormShape& s,
                                const GroupSlab& p, SlabSums<kValues>& sums) {
  for (int q = 0; q < kValues; ++q) sums.partial[q][threadIdx.x] = v[q];
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
  const int64_t cg = s.channels_per_group();
  if (threadIdx.x < p.groups) {
    for (int q = 0; q < kValues; ++q) {
      float acc = 0.0f;
      for (int64_t k = 0; k < cg; ++k) acc += sums.channel[q][threadIdx.x * cg + k];
      sums.group[q][threadIdx.x] = acc;
    }
  }
  __syncthreads();
}

// Forward: mean and rstd of each group, then y = (x - mean) rstd gamma + beta (then SiLU,
// then dropout), as the first mapping's kernel.
template <bool kSilu, class T>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_forward_kernel(GroupNormShape s, GroupSlab p, const T* x,  // x (N, S, C)
                                   const float* gamma, const float* beta,      // (C)
                                   T* y, float* mean, float* rstd,  // y (N, S, C); (N, G)
                                   DropoutSpec keyed) {
  __shared__ SlabSums<1> sums;
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, s.s);
  const float count = static_cast<float>(s.s * s.channels_per_group());
  float v[1] = {0.0f};
  for (int64_t i = t.first; i < t.end; i += t.step) v[0] += load(x, i);
  slab_group_sums(v, s, p, sums);
  const float mu = sums.group[0][t.group] / count;
  v[0] = 0.0f;
  for (int64_t i = t.first; i < t.end; i += t.step) {
    const float d = load(x, i) - mu;
    v[0] += d * d;
  }
  slab_group_sums(v, s, p, sums);
  const float r = rsqrtf(sums.group[0][t.group] / count + s.eps);
  if (t.writes_stats) {
    mean[t.stat] = mu;
    rstd[t.stat] = r;
  }
  const float gm = gamma[t.c], bt = beta[t.c];
  const float keep_scale = 1.0f / (1.0f - drop.p);  // as the dropout op computes it
  for_each_with_mask(t, p, drop, [&](int64_t i, bool keep) {
    const float h = (load(x, i) - mu) * r * gm + bt;
    const float out = kSilu ? h / (1.0f + expf(-h)) : h;
    store(y, i, drop.p > 0.0f ? (keep ? out * keep_scale : 0.0f) : out);
  });
}

// dx from dy (the gradient at the norm's output) as the first mapping's dx kernel: per group
// mean(g) and mean(g xhat) with g = dy gamma, then dx (+)= rstd (g - mean(g) - xhat
// mean(g xhat)). kSampleSums: from the same reads, each (sample, channel)'s sums of dy xhat
// and dy over the sample's rows into sample_sums (N, 2, C), which dgamma and dbeta add up
// over the samples (param_grads_kernel): no third pass over x and dy for them.
template <class T, bool kSampleSums>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_dx_kernel(GroupNormShape s, GroupSlab p, const T* x,  // x (N, S, C)
                              const float* gamma, const float* mean, const float* rstd,
                              const T* dy, T* dx, bool add,  // dy, dx (N, S, C)
                              float* sample_sums) {          // (N, 2, C) or null
  constexpr int kValues = kSampleSums ? 4 : 2;
  __shared__ SlabSums<kValues> sums;
  const SlabThread t(s, p, s.s);
  const float count = static_cast<float>(s.s * s.channels_per_group());
  const float mu = mean[t.stat], r = rstd[t.stat], gm = gamma[t.c];
  float v[kValues] = {};  // sum of g, of g xhat (and of dy xhat, of dy)
  for (int64_t i = t.first; i < t.end; i += t.step) {
    const float d = load(dy, i), g = d * gm, xc = load(x, i) - mu;
    v[0] += g;
    v[1] += g * xc * r;
    if constexpr (kSampleSums) {
      v[2] += d * xc * r;
      v[3] += d;
    }
  }
  slab_group_sums(v, s, p, sums);
  if constexpr (kSampleSums) {
    if (threadIdx.x < p.width) {  // thread j < W holds channel j's sums (t.c is channel j)
      sample_sums[(t.n * 2 + 0) * s.c + t.c] = sums.channel[2][threadIdx.x];
      sample_sums[(t.n * 2 + 1) * s.c + t.c] = sums.channel[3][threadIdx.x];
    }
  }
  const float mean_g = sums.group[0][t.group] / count, mean_gx = sums.group[1][t.group] / count;
  for (int64_t i = t.first; i < t.end; i += t.step) {
    const float g = load(dy, i) * gm;
    store_grad(dx, i, r * (g - mean_g - (load(x, i) - mu) * r * mean_gx), add);
  }
}

// dgamma[c] += sum over n of sample_sums[n, 0, c] (dy xhat), dbeta[c] += of [n, 1, c] (dy),
// samples in order.
__global__ void group_norm_param_grads_kernel(int64_t n, int64_t c, const float* sample_sums,
                                              float* dgamma, float* dbeta) {
  DDPM_GRID_STRIDE(i, 2 * c) {
    const int64_t k = i / c, ch = i % c;
    float* out = k == 0 ? dgamma : dbeta;
    if (out == nullptr) continue;
    float acc = 0.0f;
    for (int64_t j = 0; j < n; ++j) acc += sample_sums[(j * 2 + k) * c + ch];
    out[ch] += acc;
  }
}

// dh = dy' * silu'(h) as v1's dh kernel, over a slab's rows [y B, y B + B): the group's
// mean and rstd, gamma[c] and beta[c] read once per thread, no division per element.
template <class T>
__global__ void __launch_bounds__(kThreads)
    group_norm_slab_silu_dh_kernel(GroupNormShape s, GroupSlab p, int64_t rows_per_block,
                                   const T* x, const float* gamma, const float* beta,  // x (N, S, C)
                                   const float* mean, const float* rstd, const T* dy,
                                   T* dh, DropoutSpec keyed) {  // dy, dh (N, S, C)
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, rows_per_block);
  const float mu = mean[t.stat], r = rstd[t.stat], gm = gamma[t.c], bt = beta[t.c];
  const float keep_scale = 1.0f / (1.0f - drop.p);
  for_each_with_mask(t, p, drop, [&](int64_t i, bool keep) {
    const float h = (load(x, i) - mu) * r * gm + bt;
    store(dh, i, silu_grad(h, load(dy, i), drop, keep_scale, keep));
  });
}

// Rows per block of the dh kernel: 32 passes of the block's threads, so 32 elements a
// thread against a setup of a few 64-bit divisions (at 16 channels a slab, 512 rows: the
// CIFAR-10 model's 32x32 maps in 2 pieces a slab), more where the grid's y would pass 65,535.
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

GroupNormMapping g_mapping = GroupNormMapping::ChannelSlab;

// The slab of shape s under the chosen mapping; groups = 0: v1 runs.
GroupSlab slab_for(const GroupNormShape& s) {
  return g_mapping == GroupNormMapping::ChannelSlab ? plan_group_slab(s) : GroupSlab{};
}

// The entries, one template per storage type.
template <class T>
void forward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta, T* y,
             float* mean, float* rstd, bool silu, const DropoutSpec& dropout) {
  if (s.n * s.groups == 0) return;
  const GroupSlab slab = slab_for(s);
  if (slab.groups > 0) {
    const auto blocks = static_cast<unsigned>(s.n * (s.groups / slab.groups));
    if (silu)
      DDPM_LAUNCH((group_norm_slab_forward_kernel<true, T>), blocks, kThreads)(
          s, slab, x, gamma, beta, y, mean, rstd, dropout);
    else
      DDPM_LAUNCH((group_norm_slab_forward_kernel<false, T>), blocks, kThreads)(
          s, slab, x, gamma, beta, y, mean, rstd, dropout);
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
  const GroupSlab slab = slab_for(s);
  if (slab.groups > 0) {
    const int64_t rows = dh_rows_per_block(s, slab);
    const dim3 grid(static_cast<unsigned>(s.n * (s.groups / slab.groups)),
                    static_cast<unsigned>((s.s + rows - 1) / rows));
    DDPM_LAUNCH(group_norm_slab_silu_dh_kernel<T>, grid, kThreads)(
        s, slab, rows, x, gamma, beta, mean, rstd, dy, dh, dropout);
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
  const GroupSlab slab = slab_for(s);
  // v2 with a workspace sums dgamma's and dbeta's terms per sample in its dx pass; else a
  // column-sum pass over x and dy gives them
  const bool params_in_dx = dx && slab.groups > 0 && workspace && (dgamma || dbeta);
  if (dx && slab.groups > 0) {
    const auto blocks = static_cast<unsigned>(s.n * (s.groups / slab.groups));
    if (params_in_dx)
      DDPM_LAUNCH((group_norm_slab_dx_kernel<T, true>), blocks, kThreads)(
          s, slab, x, gamma, mean, rstd, dy, dx, add, workspace);
    else
      DDPM_LAUNCH((group_norm_slab_dx_kernel<T, false>), blocks, kThreads)(
          s, slab, x, gamma, mean, rstd, dy, dx, add, nullptr);
  } else if (dx) {
    DDPM_LAUNCH(group_norm_dx_kernel<T>, static_cast<unsigned>(s.n * s.groups), kThreads)(
        s, x, gamma, mean, rstd, dy, dx, add);
  }
  if (params_in_dx)
    DDPM_LAUNCH(group_norm_param_grads_kernel, grid_for(2 * s.c), kThreads)(s.n, s.c, workspace,
                                                                          dgamma, dbeta);
  else if (dgamma || dbeta)
    column_sums<2>(param_grad_plan(s, workspace != nullptr),
                   ParamGradTerms<T>{s, x, mean, rstd, dy}, workspace, dgamma, dbeta);
}

}  // namespace

void set_group_norm_mapping(GroupNormMapping m) { g_mapping = m; }
GroupNormMapping group_norm_mapping() { return g_mapping; }

int64_t group_norm_backward_workspace(const GroupNormShape& s) {
  const int64_t column_sums = param_grad_plan(s, true).workspace_floats(2);
  const int64_t sample_sums = 2 * s.n * s.c;  // v2's (N, 2, C)
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
