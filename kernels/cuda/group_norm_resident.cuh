// Group norm v4, the slab in registers (kernels/cuda/group_norm_resident.cu): what
// group_norm.cu's host side needs to plan and launch it.
#pragma once

#include <cstdint>

#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/group_norm_slab.cuh"

namespace ddpm::cuda::group_norm_detail {

// At most 512 threads a block: __launch_bounds__ then leaves a thread 128 registers, room for
// the backward's two tensors' runs (2 x 64 bytes: 32 registers) beside its per-channel
// constants and sums without spilling (ptxas sm_90: scripts/no_spills.sh).
constexpr int64_t kResidentMaxThreads = 512;
// Bytes of each tensor a thread keeps in registers: the forward's x, the backward's x and dy.
// 128 bytes is 8 runs of bf16 (4 of fp32): 8 16-byte loads in flight a thread before its
// first use, which at 2 blocks of 256 threads an SM is 64 KB an SM in flight, above the ~36
// KB an H100 needs to cover its DRAM latency (3.35 TB/s x ~1.4 us / 132 SMs).
constexpr int64_t kResidentForwardBytes = 128;
constexpr int64_t kResidentBackwardBytes = 64;

template <class T>
DDPM_HD constexpr int resident_passes(int64_t bytes) {
  return static_cast<int>(bytes / (kRun * static_cast<int64_t>(sizeof(T))));
}

// v4's slab for shape s, `passes` rows a thread: v3's slab of runs (plan_group_slab with
// runs), P = width / kRun threads a row, each warp warp_rows = 32 / P whole rows (the lanes
// holding the same run are P apart, so shuffles P, 2P, ... apart sum the warp's rows), and
// rows_per_pass = the rows a pass takes, rounded up to whole warps, so that S rows are at
// most `passes` passes. groups = 0: v4 does not take s (no slab of runs, or S too long for
// kResidentMaxThreads threads).
GroupSlab plan_resident(const GroupNormShape& s, int passes);
inline int64_t resident_threads(const GroupSlab& p) { return p.rows_per_pass / p.warp_rows * 32; }

// The kernels' entries (launch on the default stream; s has a plan, every tensor's rows
// allow runs). forward: y = gn(x) (silu: silu(gn(x)), then dropout), mean, rstd. dx: dx (+)=
// the norm's input gradient from dy (silu_in: dy is the gradient at the fused SiLU's output,
// through dropout's backward when dropout.p > 0; dh is recomputed, rounded as T holds it),
// and with sample_sums each (sample, channel)'s sums of dh xhat and dh into (N, 2, C).
template <class T>
void resident_forward(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
                      T* y, float* mean, float* rstd, bool silu, const DropoutSpec& dropout);
template <class T>
void resident_dx(const GroupNormShape& s, const T* x, const float* gamma, const float* beta,
                 const float* mean, const float* rstd, const T* dy, T* dx, bool add,
                 float* sample_sums, bool silu_in, const DropoutSpec& dropout);

}  // namespace ddpm::cuda::group_norm_detail
