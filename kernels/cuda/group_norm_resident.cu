// Group norm v4: the slab in registers. x (N, S, C) channels-last, bf16 or f32 storage.
//
// Why. v1-v3 (group_norm.cu) walk their data three times in the forward (sum, squared
// deviations, output) and twice in the backward, and add up each channel's partials in one
// thread of the block, a row at a time (slab_group_sums: 128 dependent shared-memory reads
// at v3's 128 rows a pass). On an H200 (docs/gpu-report.md, bf16, batch 128) that left the
// fused GN + SiLU at 23% of the memory bandwidth on the 32x32 maps and at 4-16% on the 16x16
// and 8x8 ones: in the training step, 9.5 ms of 38.7, where the bytes alone take ~1 ms.
//
// How. v3's slab and threads (a block per (sample, slab of whole groups), a thread per run
// of 8 channels moved as 16-byte words), but each thread loads all of its rows first and
// keeps them in registers as they are stored (StoredRun: 8 bf16 in 4 registers), so:
//   forward   x is read once: its sum, then the squared deviations from the mean (the same
//             exact two-pass statistics as v1-v3), then y, all from registers. 4 bytes an
//             element in bf16 where v3 moves 8 (x read 3 times, y written);
//   backward  x and dy are read once (the fused GN + SiLU's dh recomputed from them once
//             and kept, rounded as storage holds it, in dy's registers), dx written: 6 bytes
//             an element where v3 moves 10. With dropout too: its mask regenerated from
//             Philox by run (run_keeps), so the GN + SiLU + dropout backward is one kernel
//             where v1-v3 write dh in a pass of its own and read it back.
// The block is sized to the map: rows_per_pass = ceil(S / passes) rounded up to whole warps
// (plan_resident), a warp holding 32 / P whole rows (P = width / 8 threads a row; for P = 3,
// a 384-channel map's 24-channel slabs, 10 rows and 2 idle lanes), so a 32x32 map of 128
// channels is 8 passes of 128 rows (256 threads) in the forward and 4 of 256 (512) in the
// backward, an 8x8 one 4 passes of a single warp. The sums over a block's rows fold each
// warp's rows onto its first by shuffles (the lanes that hold the same run are P apart:
// log2 of the warp's rows steps), then go per channel over the block's warps in order, then
// per group over its channels in order: a fixed order, so the same bits every run, and a
// chain of at most 16 shared-memory reads where v3 has 128.
// dgamma and dbeta: per-(sample, channel) sums from the backward's registers (no pass of
// their own), added over the samples by group_norm.cu's param_grads kernel.
// Limits: S up to about passes x 512 / P rows: at 16-channel slabs (P = 2) 2,048 forward and
// 1,024 backward in bf16, so the model's maps up to 32x32 (a 64x64 one would want 1,024
// threads); at P = 3, 1,280 and 640 (the 32x32 x 384 backward falls back). Elsewhere v3 or
// v2 runs. Bandwidth-bound by design: the arithmetic per element is v3's.
#include "kernels/cuda/group_norm_resident.cuh"

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace ddpm::cuda::group_norm_detail {

namespace {

// Floats per summed value for the warps' per-channel partials (width x warps): a 16-channel
// slab of 512 threads uses 256.
constexpr int64_t kResidentPartials = 1024;

// Shared memory of resident_group_sums: kValues sums at once.
template <int kValues>
struct ResidentSums {
  float warp[kValues][kResidentPartials];  // [value][warp * width + channel]
  float channel[kValues][kThreads];        // [value][channel within the slab]
  float group[kValues][kThreads];          // [value][group within the slab]
};

// The sums over the block's rows of each group of the slab, of kValues quantities given
// per thread per channel of its run (v[value][e]: channel t.j + e), per channel into
// sums.channel, then per group into sums.group, each channel's sum weighted by weight[c]
// (c within the slab; null: 1), which every thread may read on return. v is consumed.
// Fixed order: the fold within a warp, then the warps in order, then a group's channels in
// order.
template <int kValues>
__device__ void resident_group_sums(float (&v)[kValues][kRun], const SlabThread& t,
                                    const GroupNormShape& s, const GroupSlab& p,
                                    const float* weight, ResidentSums<kValues>& sums) {
  const int per_row = static_cast<int>(p.width / kRun);
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  // The warp's rows folded onto its first: row r adds row r + span (the lanes span P
  // further on) while that row exists, span halving from the largest power of two below
  // warp_rows to 1. Idle lanes hold zeros; rows r >= span add values no later step reads.
  const int warp_rows = static_cast<int>(p.warp_rows), row = lane / per_row;
  int span = 1;
  while (2 * span < warp_rows) span *= 2;
  for (; span >= 1; span /= 2) {
    const bool adds = row + span < warp_rows;
#pragma unroll
    for (int q = 0; q < kValues; ++q) {
#pragma unroll
      for (int e = 0; e < kRun; ++e) {
        const float other = __shfl_down_sync(0xffffffffu, v[q][e], span * per_row);
        if (adds) v[q][e] += other;
      }
    }
  }
  const int width = static_cast<int>(p.width);
  if (lane < per_row) {
#pragma unroll
    for (int q = 0; q < kValues; ++q) {
#pragma unroll
      for (int e = 0; e < kRun; ++e) sums.warp[q][warp * width + t.j + e] = v[q][e];
    }
  }
  __syncthreads();
  if (threadIdx.x < p.width) {
    const int warps = static_cast<int>(blockDim.x / 32);
    for (int q = 0; q < kValues; ++q) {
      float acc = 0.0f;
      for (int w = 0; w < warps; ++w) acc += sums.warp[q][w * width + threadIdx.x];
      sums.channel[q][threadIdx.x] = acc;
    }
  }
  __syncthreads();
  add_up_groups(sums.channel, sums.group, s, p, weight);
  __syncthreads();
}

// Pass k of thread t: its element index (the first of its run), if the slab has that row.
__device__ __forceinline__ bool has_pass(const SlabThread& t, int k) {
  return t.first + k * t.step < t.end;
}

// Forward: mean and rstd of each group from the registers, then y = (x - mean) rstd gamma +
// beta (then SiLU, then dropout), as v1-v3.
template <bool kSilu, class T>
__global__ void __launch_bounds__(kResidentMaxThreads)
    group_norm_resident_forward_kernel(GroupNormShape s, GroupSlab p, const T* x,  // (N, S, C)
                                       const float* gamma, const float* beta,      // (C)
                                       T* y, float* mean, float* rstd,  // y (N, S, C); (N, G)
                                       DropoutSpec keyed) {
  constexpr int kPasses = resident_passes<T>(kResidentForwardBytes);
  __shared__ ResidentSums<1> sums;
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, s.s);
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  StoredRun<T> xr[kPasses];
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (has_pass(t, k)) xr[k] = load_stored_run(x, t.first + k * t.step);
  }
  float v[1][kRun] = {}, xv[kRun];
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    unpack_run(xr[k], xv);
#pragma unroll
    for (int e = 0; e < kRun; ++e) v[0][e] += xv[e];
  }
  resident_group_sums(v, t, s, p, nullptr, sums);
  float mu[kRun], r[kRun], gm[kRun], bt[kRun];
#pragma unroll
  for (int e = 0; e < kRun; ++e) {
    mu[e] = sums.group[0][t.group(e, cg)] / count;
    v[0][e] = 0.0f;
  }
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    unpack_run(xr[k], xv);
#pragma unroll
    for (int e = 0; e < kRun; ++e) {
      const float d = xv[e] - mu[e];
      v[0][e] += d * d;
    }
  }
  resident_group_sums(v, t, s, p, nullptr, sums);
  run_statistics(t, s, sums.group[0], mu, gamma, beta, mean, rstd, r, gm, bt);
  const float keep_scale = 1.0f / (1.0f - drop.p);  // as the dropout op computes it
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    const int64_t i = t.first + k * t.step;
    bool keep[kRun] = {};
    if (drop.p > 0.0f) run_keeps(drop, i, keep);
    float out[kRun];
    unpack_run(xr[k], xv);
    normalized_run<kSilu>(xv, mu, r, gm, bt, drop, keep_scale, keep, out);
    store_run(y, i, out);
  }
}

// dx from dh, the gradient at the norm's output, as v3's dx kernel (group_norm.cu:
// group_norm_slab_dx_kernel): dx (+)= rstd (g - mean(g) - xhat mean(g xhat)), g = dh gamma,
// every element read once. The per-group sums of g and g xhat are those of each channel's
// sums of dh and dh xhat weighted by gamma: two sums a channel, which are also dgamma's and
// dbeta's per-sample terms (written to sample_sums (N, 2, C) when it is given), where v3
// carries four. kSiluIn: dy is the gradient at the fused SiLU's output, and through
// dropout's backward when drop.p > 0 (the mask regenerated by run); dh = dy' silu'(h) is
// recomputed once, rounded as T stores it (the bits the dh kernel would write), and kept in
// dy's registers for the dx pass. Else dh is dy.
template <class T, bool kSiluIn>
__global__ void __launch_bounds__(kResidentMaxThreads)
    group_norm_resident_dx_kernel(GroupNormShape s, GroupSlab p, const T* x,  // x (N, S, C)
                                  const float* gamma, const float* beta,     // (C)
                                  const float* mean, const float* rstd,      // (N, G)
                                  const T* dy, T* dx, bool add,  // dy, dx (N, S, C)
                                  float* sample_sums,            // (N, 2, C) or null
                                  DropoutSpec keyed) {
  constexpr int kPasses = resident_passes<T>(kResidentBackwardBytes);
  __shared__ ResidentSums<2> sums;
  const DropoutSpec drop = read_key(keyed);
  const SlabThread t(s, p, s.s);
  const int64_t cg = s.channels_per_group();
  const float count = static_cast<float>(s.s * cg);
  float mu[kRun], r[kRun], gm[kRun], bt[kRun];
  // beta only where dh is recomputed, read there (from L1) rather than held: 8 registers
  // fewer, which keeps the bf16 kernel with dropout's mask within its 128 unspilled
  run_parameters(t, cg, mean, rstd, gamma, nullptr, mu, r, gm, bt);
  StoredRun<T> xr[kPasses], gr[kPasses];  // x; dy, then the gradient at the norm's output
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    xr[k] = load_stored_run(x, t.first + k * t.step);
    gr[k] = load_stored_run(dy, t.first + k * t.step);
  }
  const float keep_scale = 1.0f / (1.0f - drop.p);
  float v[2][kRun] = {};  // per channel: sums of dh xhat, of dh
  float xv[kRun], dv[kRun];
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    unpack_run(xr[k], xv);
    unpack_run(gr[k], dv);
    if constexpr (kSiluIn) {
      bool keep[kRun];
#pragma unroll
      for (int e = 0; e < kRun; ++e) keep[e] = true;
      if (drop.p > 0.0f) run_keeps(drop, t.first + k * t.step, keep);
#pragma unroll
      for (int e = 0; e < kRun; ++e) {
        const float h = norm_affine(xv[e], mu[e], r[e], gm[e], beta[t.c + e]);
        dv[e] = as_stored<T>(silu_grad(h, dv[e], drop, keep_scale, keep[e]));
      }
      pack_run(dv, gr[k]);  // exact: every dv[e] is already a value of T
    }
#pragma unroll
    for (int e = 0; e < kRun; ++e) {
      v[0][e] = fmaf(dv[e], (xv[e] - mu[e]) * r[e], v[0][e]);  // fmaf: see norm_affine
      v[1][e] += dv[e];
    }
  }
  resident_group_sums(v, t, s, p, gamma + t.slab_c, sums);
  if (sample_sums) write_sample_sums(t, s, p, sums.channel[0], sums.channel[1], sample_sums);
  float mean_g[kRun], mean_gx[kRun];
#pragma unroll
  for (int e = 0; e < kRun; ++e) {
    mean_g[e] = sums.group[1][t.group(e, cg)] / count;
    mean_gx[e] = sums.group[0][t.group(e, cg)] / count;
  }
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (!has_pass(t, k)) continue;
    const int64_t i = t.first + k * t.step;
    float out[kRun];
    unpack_run(xr[k], xv);
    unpack_run(gr[k], dv);
    if (add) load_run(dx, i, out);
    input_grad_run(xv, dv, mu, r, gm, mean_g, mean_gx, add, out);
    store_run(dx, i, out);
  }
}

}  // namespace

GroupSlab plan_resident(const GroupNormShape& s, int passes) {
  GroupSlab p = plan_group_slab(s, true);
  if (p.groups == 0 || p.run != kRun) return GroupSlab{};
  const int64_t per_row = p.width / kRun;  // P: at most kThreads / kRun = 32
  p.warp_rows = 32 / per_row;              // the rows of one warp
  const int64_t rows = (s.s + passes - 1) / passes;
  const int64_t warps = rows <= p.warp_rows ? 1 : (rows + p.warp_rows - 1) / p.warp_rows;
  p.rows_per_pass = warps * p.warp_rows;
  const int64_t threads = resident_threads(p);
  if (threads > kResidentMaxThreads || p.width * (threads / 32) > kResidentPartials)
    return GroupSlab{};
  return p;
}

template <class T>
void resident_forward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
                      T* y, float* mean, float* rstd, bool silu, const DropoutSpec& dropout) {
  const GroupSlab p = plan_resident(s, resident_passes<T>(kResidentForwardBytes));
  CHECK(p.groups > 0, "group norm v4: shape (" << s.n << ", " << s.s << ", " << s.c << ") in "
                                               << s.groups << " groups has no plan");
  const auto blocks = static_cast<unsigned>(s.n * (s.groups / p.groups));
  const auto threads = static_cast<unsigned>(resident_threads(p));
  if (silu)
    DDPM_LAUNCH((group_norm_resident_forward_kernel<true, T>), blocks, threads)(
        s, p, x, gamma, beta, y, mean, rstd, dropout);
  else
    DDPM_LAUNCH((group_norm_resident_forward_kernel<false, T>), blocks, threads)(
        s, p, x, gamma, beta, y, mean, rstd, dropout);
}

template <class T>
void resident_dx(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
                 const float* mean, const float* rstd, const T* dy, T* dx, bool add,
                 float* sample_sums, bool silu_in, const DropoutSpec& dropout) {
  const GroupSlab p = plan_resident(s, resident_passes<T>(kResidentBackwardBytes));
  CHECK(p.groups > 0, "group norm v4: shape (" << s.n << ", " << s.s << ", " << s.c << ") in "
                                               << s.groups << " groups has no plan");
  const auto blocks = static_cast<unsigned>(s.n * (s.groups / p.groups));
  const auto threads = static_cast<unsigned>(resident_threads(p));
  if (silu_in)
    DDPM_LAUNCH((group_norm_resident_dx_kernel<T, true>), blocks, threads)(
        s, p, x, gamma, beta, mean, rstd, dy, dx, add, sample_sums, dropout);
  else
    DDPM_LAUNCH((group_norm_resident_dx_kernel<T, false>), blocks, threads)(
        s, p, x, gamma, beta, mean, rstd, dy, dx, add, sample_sums, dropout);
}

#define DDPM_RESIDENT_ENTRIES(T)                                                                \
  template void resident_forward<T>(const GroupNormShape&, const T*, const float*, const float*, \
                                    T*, float*, float*, bool, const DropoutSpec&);              \
  template void resident_dx<T>(const GroupNormShape&, const T*, const float*, const float*,     \
                               const float*, const float*, const T*, T*, bool, float*, bool,    \
                               const DropoutSpec&);
DDPM_RESIDENT_ENTRIES(float)
DDPM_RESIDENT_ENTRIES(uint16_t)
#undef DDPM_RESIDENT_ENTRIES

}  // namespace ddpm::cuda::group_norm_detail
