// CUDA group norm with affine; same contract as kernels/cpu/group_norm.h (f32, and bf16
// storage below).
#pragma once

#include <cstdint>
#include <initializer_list>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// How the kernels (statistics, dh, dx) map onto blocks (group_norm.cu's opening comment):
// BlockPerGroup (v1: a block per (sample, group)), ChannelSlab (v2: a block per (sample,
// slab of whole groups at least 16 channels wide), a thread per channel), ChannelRuns (v3:
// v2's slabs, a thread per run of 8 adjacent channels moved as 16-byte words; v2 where the
// rows don't allow such words, v1 where one group is wider than a block), SlabInRegisters
// (v4, group_norm_resident.cu: v3's slabs with every thread's rows kept in registers, x and
// dy read once; where it has no plan, as ByShape without it) or ByShape (the default: v4
// where it has a plan, else v3 where the map has rows enough for its threads, else v2). All
// give the CPU reference's results within float rounding, each the same bits every run.
// Process-wide, as the conv and attention algorithms; kernel-bench memory times the first
// four.
enum class GroupNormMapping { BlockPerGroup, ChannelSlab, ChannelRuns, SlabInRegisters, ByShape };
void set_group_norm_mapping(GroupNormMapping m);
GroupNormMapping group_norm_mapping();
// The mapping the kernels take for shape s under the one set (one of the first four; for bf16
// activations whose rows allow 16-byte words, as the U-Net's are: v4 when its forward takes
// s; where its backward does not, that falls back under v4 as under ByShape).
GroupNormMapping group_norm_mapping_for(const GroupNormShape& s);

void group_norm_forward(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, float* y, float* mean, float* rstd);
// dgamma and dbeta are sums over the N*S rows: with group_norm_backward_workspace(s) floats
// of workspace, summed per sample in the slab mappings' dx pass when dx is wanted (no
// pass of their own), else column sums (column_sum.cuh) in chunks; with none, one pass per
// channel. dx accumulates, or with GradWrite::Assign is written outright
// (kernels/grad_write.h); dgamma and dbeta accumulate.
int64_t group_norm_backward_workspace(const GroupNormShape& s);
void group_norm_backward(const GroupNormShape& s, const float* x, const float* gamma,
                         const float* mean, const float* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* workspace = nullptr,
                         GradWrite dx_write = GradWrite::Accumulate);

// Dropout after the fused GroupNorm + SiLU, in the same kernels: element i (of the flat
// N*S*C output) is kept when philox_uniform(seed, stream, i) >= p and then scaled by
// 1/(1-p): the dropout op's mask and arithmetic (kernels/cpu/random.h), so the fused op is
// the two ops bit for bit. p = 0: no dropout. The stream may be read from a GPU step's
// StepInputs (kernels/step_inputs.h).
struct DropoutSpec {
  float p = 0.0f;
  uint64_t seed = 0;
  StepKey stream;
};

// Fused GroupNorm + SiLU (see kernels/cpu/group_norm.h): y = silu(gn(x)), then dropout when
// given; backward dh = dropout'(dy) * silu'(h) with h recomputed and the mask regenerated
// (the dropped output never goes to memory twice), then group_norm_backward with dh.
void group_norm_silu_forward(const GroupNormShape& s, const float* x, const float* gamma,
                             const float* beta, float* y, float* mean, float* rstd,
                             const DropoutSpec& dropout = {});
void group_norm_silu_dh(const GroupNormShape& s, const float* x, const float* gamma,
                        const float* beta, const float* mean, const float* rstd, const float* dy,
                        float* dh, const DropoutSpec& dropout = {});

// The fused GroupNorm + SiLU (+ dropout)'s whole backward in one kernel: dx (and dgamma,
// dbeta) from dy, the gradient at the SiLU's (or the dropout's) output, recomputing dh = dy'
// silu'(h) as it reads x and dy (dy' through dropout's backward, its mask regenerated;
// rounded as its storage would hold it), where group_norm_silu_dh then group_norm_backward
// write dh and read it back; the same bits as those two. For shapes that
// group_norm_silu_backward_fuses: without dropout, wherever a channel-slab mapping takes the
// shape; with dropout, where v4 does (its backward on `bf16` or f32 storage, with the rows of
// the tensors given, null for unchecked, allowing 16-byte runs). dx is required, and a
// workspace of group_norm_backward_workspace(s) floats when dgamma or dbeta is wanted.
bool group_norm_silu_backward_fuses(const GroupNormShape& s, float dropout_p, bool bf16 = false,
                                    std::initializer_list<const void*> tensors = {});
void group_norm_silu_backward(const GroupNormShape& s, const float* x, const float* gamma,
                              const float* beta, const float* mean, const float* rstd,
                              const float* dy, float* dx, float* dgamma, float* dbeta,
                              float* workspace, GradWrite dx_write = GradWrite::Accumulate,
                              const DropoutSpec& dropout = {});

// The same kernels with the activations (x, y, dy, dh, dx) stored as bf16 bits (uint16_t,
// kernels/bf16.h): read into fp32, every sum, the statistics (mean, rstd), the affine
// parameters and dgamma / dbeta in fp32, each stored activation rounded once (nearest,
// ties to even). dx accumulates: dx = bf16(float(dx) + the gradient) (with Assign: bf16(the
// gradient)). Half the bytes of the f32 kernels. silu: the fused GN + SiLU (+ dropout)
// forward, else plain group norm.
// Reference: kernels/cpu/group_norm.h's *_bf16 (the f32 kernels on the decoded values).
void group_norm_forward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, uint16_t* y, float* mean, float* rstd, bool silu,
                             const DropoutSpec& dropout = {});
void group_norm_silu_dh_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd,
                             const uint16_t* dy, uint16_t* dh, const DropoutSpec& dropout = {});
void group_norm_backward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                              const float* mean, const float* rstd, const uint16_t* dy,
                              uint16_t* dx, float* dgamma, float* dbeta,
                              float* workspace = nullptr,
                              GradWrite dx_write = GradWrite::Accumulate);
void group_norm_silu_backward_bf16(const GroupNormShape& s, const uint16_t* x,
                                   const float* gamma, const float* beta, const float* mean,
                                   const float* rstd, const uint16_t* dy, uint16_t* dx,
                                   float* dgamma, float* dbeta, float* workspace,
                                   GradWrite dx_write = GradWrite::Accumulate,
                                   const DropoutSpec& dropout = {});

}  // namespace ddpm::cuda
