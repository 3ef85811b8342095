// The pieces the slab mappings of the CUDA group norm share (kernels/cuda/group_norm.cu's
// v2 and v3, kernels/cuda/group_norm_resident.cu's v4): a block's slab of whole groups and
// what one of its threads owns, the per-channel constants of a thread's run, and the
// dropout mask and SiLU gradient as the fused GN + SiLU (+ dropout) computes them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/philox.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/shapes.h"

namespace ddpm::cuda::group_norm_detail {

// The norm's output before any SiLU, h = (x - mean) rstd gamma + beta, with its one fused
// multiply-add spelled out. Several kernels compute h for the same element (the forward, the
// dh pass, the fused backward's recomputation) and their results must be the same bits;
// written as a plain expression, whether the compiler fuses the last product with the add
// depends on the code around it. Under the CPU emulation, which compiles the kernels with
// contraction on, g++ fused it in one kernel and not another, and the fused GN + SiLU
// backward missed the two-kernel chain's bits (2026-12-07). This is the FMA nvcc forms from
// the plain expression (the last product with the add), so a GPU's h should not move; not
// checked in its SASS yet.
__device__ __forceinline__ float norm_affine(float x, float mean, float rstd, float gamma,
                                             float beta) {
  return fmaf((x - mean) * rstd, gamma, beta);
}

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
  return dy * silu_derivative(h);
}

// At least 16 channels per slab row: a whole 32-byte sector of bf16 (64 bytes of f32) per
// row piece; wider slabs mean fewer, longer blocks for no gain in sectors.
constexpr int64_t kMinSlabChannels = 16;

// A block's slab: `groups` whole groups side by side, `width` channels, each thread keeping
// `run` adjacent channels of them (v2: 1; v3, v4: kRun, storage.cuh), `rows_per_pass` pixel
// rows read per step of the block's threads (v2, v3: kThreads / (width / run); v4 sizes its
// blocks to the map, plan_resident). groups = 0: no slab fits (C/G > kThreads). quads (v2):
// C and the width are multiples of 4, so the four channels of every Philox block of a row
// are four adjacent threads of one row of the slab (group_norm.cu's quad_keeps); v3's and
// v4's runs hold whole Philox blocks.
// warp_rows (v4 only; 0 in v2 and v3): the slab rows a warp holds, 32 / P (P = width / run
// threads a row), each warp whole rows, its last 32 - warp_rows P lanes idle (SlabThread).
struct GroupSlab {
  int64_t groups = 0, width = 0, run = 1, rows_per_pass = 0, warp_rows = 0;
  bool quads = false;
};

// The fewest groups k dividing G with k C/G >= kMinSlabChannels and at most kThreads
// channels; else (no such k) the widest slab of at most kThreads channels. Runs of kRun
// channels when `runs` (the rows of every tensor allow them: C a multiple of kRun, 16-byte
// aligned bases) and the width is a multiple of kRun.
inline GroupSlab plan_group_slab(const GroupNormShape& s, bool runs) {
  const int64_t cg = s.channels_per_group();
  GroupSlab p;
  for (int64_t k = 1; k <= s.groups && k * cg <= kThreads; ++k) {
    if (s.groups % k != 0) continue;
    p.groups = k;
    if (k * cg >= kMinSlabChannels) break;
  }
  p.width = p.groups * cg;
  if (p.width == 0) return p;
  p.run = runs && p.width % kRun == 0 ? kRun : 1;
  p.rows_per_pass = kThreads / (p.width / p.run);
  p.quads = p.width % 4 == 0 && s.c % 4 == 0;
  return p;
}

// What one thread of a slab block does: channels c .. c + run - 1 of sample n, for the whole
// kernel. Block (x, y) is slab x % (G / k) of sample x / (G / k), rows [y B, y B + B) of it
// (B = rows_per_block: all S rows in the statistics kernels, whose grids have one y). With
// P = width / run threads to a slab row, thread t takes the run j = (t % P) run of the slab
// and rows y B + t / P, + R, ... (R = rows_per_pass): its elements (each the first of its
// run) are the flat indices first, first + step, ... below end (step = R C). The kThreads %
// P threads left over are idle (not `active`): no elements (first = end). v4 (warp_rows >
// 0) maps lanes, not threads, so: lane l of warp w takes run l % P of row w warp_rows + l /
// P; for P a power of two the same as above, else the warp's last 32 % P lanes are idle.
struct SlabThread {
  int64_t n, c;              // the sample; the first of the thread's channels
  int64_t slab_c, stat0;     // the slab's first channel; the (n, group) index of its first group
  int64_t j, r0;             // the thread's first channel within the slab; its first row
  int64_t first, end, step;  // the elements
  bool active;
  __device__ SlabThread(const GroupNormShape& s, const GroupSlab& p, int64_t rows_per_block) {
    // 32-bit quotients (of a block or thread index): a 64-bit division is a called subroutine
    const int64_t cg = s.channels_per_group();
    const auto slabs = static_cast<unsigned>(s.groups / p.groups);
    const auto per_row = static_cast<unsigned>(p.width / p.run);
    n = blockIdx.x / slabs;
    const int64_t g0 = static_cast<int64_t>(blockIdx.x % slabs) * p.groups;
    // v4 gives each warp whole rows (warp_rows of them, lanes past warp_rows P idle): t's
    // lane within its warp in place of t
    const unsigned lane = p.warp_rows > 0 ? threadIdx.x % 32 : threadIdx.x;
    const unsigned warp_row0 = p.warp_rows > 0 ? threadIdx.x / 32 * p.warp_rows : 0;
    j = static_cast<int64_t>(lane % per_row) * p.run;
    r0 = warp_row0 + lane / per_row;
    const int64_t row0 = blockIdx.y * rows_per_block;
    const int64_t rows_end = row0 + rows_per_block < s.s ? row0 + rows_per_block : s.s;
    slab_c = g0 * cg;
    c = slab_c + j;
    stat0 = n * s.groups + g0;
    step = p.rows_per_pass * s.c;
    end = (n * s.s + rows_end) * s.c;
    active = p.warp_rows > 0 ? lane < p.warp_rows * per_row : r0 < p.rows_per_pass;
    first = active ? (n * s.s + row0 + r0) * s.c + c : end;
  }
  // The group (within the slab) of the thread's channel c + e: 32-bit arithmetic (j + e and
  // cg are at most kThreads), where a 64-bit division is a called subroutine.
  __device__ int group(int e, int64_t cg) const {
    return (static_cast<int>(j) + e) / static_cast<int>(cg);
  }
  // Whether it stores the mean and rstd of channel c + e's group: the thread of the first
  // row that holds the group's first channel.
  __device__ bool writes_stats(int e, int64_t cg) const {
    return r0 == 0 && (static_cast<int>(j) + e) % static_cast<int>(cg) == 0;
  }
};

// The last step of a block's sums over its slab (v2-v4): per group of the slab, its
// channels' sums in channel order (channel[value][c], c within the slab, weighted by
// weight[c] when weight is given), into group[value][g]; a thread per group. The caller
// synchronizes before (channel written) and after (group read).
template <int kValues>
__device__ __forceinline__ void add_up_groups(const float (&channel)[kValues][kThreads],
                                              float (&group)[kValues][kThreads],
                                              const GroupNormShape& s, const GroupSlab& p,
                                              const float* weight) {
  const int64_t cg = s.channels_per_group();
  if (threadIdx.x >= p.groups) return;
  for (int q = 0; q < kValues; ++q) {
    float acc = 0.0f;
    for (int64_t k = 0; k < cg; ++k) {
      const int64_t c = threadIdx.x * cg + k;
      acc += weight ? weight[c] * channel[q][c] : channel[q][c];
    }
    group[q][threadIdx.x] = acc;
  }
}

// dgamma's and dbeta's per-sample terms of the slab's channels (v2-v4's dx pass) into
// sample_sums (N, 2, C): thread k < W writes channel k's sum of dh xhat (dh_xhat[k]) and of
// dh (dh[k]), read from the block's shared sums.
__device__ __forceinline__ void write_sample_sums(const SlabThread& t, const GroupNormShape& s,
                                                  const GroupSlab& p, const float* dh_xhat,
                                                  const float* dh, float* sample_sums) {
  if (threadIdx.x >= p.width) return;
  sample_sums[(t.n * 2 + 0) * s.c + t.slab_c + threadIdx.x] = dh_xhat[threadIdx.x];
  sample_sums[(t.n * 2 + 1) * s.c + t.slab_c + threadIdx.x] = dh[threadIdx.x];
}

// The norm's input gradient of a run (v2-v4's dx write): rstd (dh gamma - mean(g) - xhat
// mean(g xhat)) from x (xv) and dh (dv), added to out when `add` (one fp32 add, one rounding:
// store_grad's rule), else written into it.
template <int kN>
__device__ __forceinline__ void input_grad_run(const float (&xv)[kN], const float (&dv)[kN],
                                               const float (&mu)[kN], const float (&r)[kN],
                                               const float (&gm)[kN], const float (&mean_g)[kN],
                                               const float (&mean_gx)[kN], bool add,
                                               float (&out)[kN]) {
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    // r (dv gamma - mean_g - xhat mean_gx), each multiply-add an fmaf (see norm_affine)
    const float xhat = (xv[e] - mu[e]) * r[e];
    const float inner = fmaf(-xhat, mean_gx[e], fmaf(dv[e], gm[e], -mean_g[e]));
    out[e] = add ? fmaf(r[e], inner, out[e]) : r[e] * inner;
  }
}

// The forward's constants of a thread's run once its groups' sums of squared deviations
// are known (sq_sums[g], g within the slab): each channel's rstd (written with the mean, by
// the thread that writes_stats), gamma and beta.
template <int kN>
__device__ __forceinline__ void run_statistics(const SlabThread& t, const GroupNormShape& s,
                                               const float* sq_sums, const float (&mu)[kN],
                                               const float* gamma, const float* beta,
                                               float* mean, float* rstd, float (&r)[kN],
                                               float (&gm)[kN], float (&bt)[kN]) {
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    r[e] = rsqrtf(sq_sums[t.group(e, cg)] / count + s.eps);
    if (t.writes_stats(e, cg)) {
      mean[t.stat0 + t.group(e, cg)] = mu[e];
      rstd[t.stat0 + t.group(e, cg)] = r[e];
    }
    gm[e] = gamma[t.c + e];
    bt[e] = beta[t.c + e];
  }
}

// The forward's output of a run: (x - mean) rstd gamma + beta, then SiLU (kSilu), then
// dropout (drop.p > 0: kept elements scaled by keep_scale, the others 0).
template <bool kSilu, int kN>
__device__ __forceinline__ void normalized_run(const float (&xv)[kN], const float (&mu)[kN],
                                               const float (&r)[kN], const float (&gm)[kN],
                                               const float (&bt)[kN], const DropoutSpec& drop,
                                               float keep_scale, const bool (&keep)[kN],
                                               float (&out)[kN]) {
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    const float h = norm_affine(xv[e], mu[e], r[e], gm[e], bt[e]);
    const float o = kSilu ? silu_value(h) : h;
    out[e] = drop.p > 0.0f ? (keep[e] ? o * keep_scale : 0.0f) : o;
  }
}

// The backward's per-channel constants of a thread's run: each channel's group mean and
// rstd, gamma, and beta (zeros where beta is null: the kernels that do not use it).
template <int kN>
__device__ __forceinline__ void run_parameters(const SlabThread& t, int64_t cg,
                                               const float* mean, const float* rstd,
                                               const float* gamma, const float* beta,
                                               float (&mu)[kN], float (&r)[kN], float (&gm)[kN],
                                               float (&bt)[kN]) {
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    mu[e] = mean[t.stat0 + t.group(e, cg)];
    r[e] = rstd[t.stat0 + t.group(e, cg)];
    gm[e] = gamma[t.c + e];
    bt[e] = beta ? beta[t.c + e] : 0.0f;
  }
}

// A v3 run's decisions, elements i .. i + kRun - 1 (i a multiple of kRun): kRun / 4 whole
// Philox blocks, each of whose four words is used.
__device__ __forceinline__ void run_keeps(const DropoutSpec& d, int64_t i, bool (&keep)[kRun]) {
#pragma unroll
  for (int b = 0; b < kRun / 4; ++b) {
    const auto index = static_cast<uint64_t>(i) / 4 + static_cast<uint64_t>(b);
    const Philox4 block = philox_block(d.seed, d.stream.base, index);
#pragma unroll
    for (int w = 0; w < 4; ++w) keep[4 * b + w] = word_to_uniform(block.v[w]) >= d.p;
  }
}

}  // namespace ddpm::cuda::group_norm_detail
