// Convolution v4 (kernels/cuda/conv2d_bf16.cu): implicit GEMM on bf16 tensor cores with
// fp32 accumulation, for fp32 tensors (operands rounded to bf16 on the way in, as autocast
// does) and for bf16 activations (read as they are). Same contracts as conv2d.cuh: forward overwrites y, backward accumulates into dx
// and dw. The workspace (floats, from the *_workspace functions) holds the bf16 copies of
// the operands and the split-K planes. Needs sm_80 or later.
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// A channel count as v4 lays it out: padded to a multiple of 8, whole 16-byte chunks of bf16
// (the GEMM's loaders copy nothing smaller; the padding holds zeros).
inline int64_t round_up8(int64_t c) { return (c + 7) / 8 * 8; }

// The block shape each GEMM runs with: 128x128 tiles (8 warps of 64x32) in a 3-stage
// pipeline (Large, 48 KB of shared memory) or a 4-stage one (Deep, 64 KB), 64x64 tiles (4
// warps, Small), 128x128 tiles of 4 warps of 64x64 in 4 stages (WideWarps, 64 KB: a
// third fewer shared-memory reads per mma, half the warps), or 256x128 tiles of 8 warps of
// 64x64 in 3 stages (Tall, 72 KB, one block an SM: the wide warps' reads, and B read from
// L2 once per 256 rows instead of 128). The heuristic takes Large when its tiles alone make
// a wave on the GPU, else Small; Autotune times all five on the first call of each pass and
// size (like torch.backends.cudnn.benchmark), prints the times and keeps the fastest. The
// choice never changes the result's bits (conv2d_bf16.cu).
// Wgmma (v5, forced only, until a GPU has verified it): the three passes on Hopper's wgmma
// (128x128 tiles, 2 warpgroups, sm_90a), fed by v4's cp.async loaders. Its bits are its own
// (the tensor cores order a k-step's sums), and it needs gemm_sm90_available()
// (kernels/cuda/gemm_sm90.cuh): elsewhere it refuses. WgmmaTma: v5 with its B operand (the
// forward's weights, the wgrad's dy, the dgrad's weights per tap when Cout is a multiple of
// 64 after padding to 8) brought by the copy engine (TMA) instead, the same bits as Wgmma.
// WgmmaPaired: v5 in a ring of 3 stages, not 4, so that two blocks share an SM (one's first
// loads and epilogue behind the other's products), the same bits as Wgmma. WgmmaTall: v5
// on 256x128 tiles (each warpgroup 128 rows, two wgmma a k-step; 3 stages of 48 KB, one
// block an SM: B read from L2 once per 256 rows instead of 128), the same bits as Wgmma.
// WgmmaIm2col: WgmmaTma with the gathered A (the forward's im2col(x), the dgrad's window of
// dy, the wgrad's im2col(x)^T) by the copy engine too, in its im2col mode, where the shape
// allows it (stride 1, the gathered channels a multiple of 64 after padding to 8, the same
// bounding box along H and W: every 3x3 layer of the CIFAR-10 model but the first), so that
// no thread computes an address or copies a chunk; there warp-specialised (a producer
// warpgroup; set_conv2d_bf16_v5_warp_specialised below), elsewhere WgmmaTma. The same bits
// as Wgmma. Not among the autotuner's choices until a GPU has run it (the im2col mode's walk
// is emulated from the PTX ISA's description).
// WgmmaAutotune: v5's four (Wgmma, WgmmaTma, WgmmaPaired, WgmmaTall) timed on the first call
// of each pass and size, printed, the fastest kept, as Autotune does for v4's: the same bits
// whichever it keeps.
enum class Bf16Tiles {
  Heuristic, Autotune, Large, Deep, Small, WideWarps, Tall, Wgmma, WgmmaTma, WgmmaPaired,
  WgmmaTall, WgmmaIm2col, WgmmaAutotune
};
void set_conv2d_bf16_tiles(Bf16Tiles t);  // process-wide; Heuristic by default
Bf16Tiles conv2d_bf16_tiles();

// Whether the shapes of at most 8 output channels that conv2d_thin_applies takes (the
// U-Net's last convolution) run on the direct kernels of conv2d_thin.cuh instead of the
// GEMM (v4 or v5, whichever the tiles above choose: a GEMM's 128-column tile would use 3 of
// its columns). Process-wide; on by default; off to time or test the GEMM on them.
void set_conv2d_bf16_thin(bool on);
bool conv2d_bf16_thin();

// Whether the GEMMs' cp.async copies of the forward's A (x through each tap's window), the
// dgrad's A (dy likewise) and the wgrad's A (x through the taps of a block's columns) keep
// their sources in L1 on the way (cp.async.ca), or in L2 only (.cg) as the other operands
// do. A block's taps reread the pixels its other taps read a few stages before: each input
// pixel up to KH x KW times in one K loop (conv2d_bf16.cu, docs/kernels.md v4 steps 12 and
// 15). On by default, as CUTLASS's implicit-GEMM convolutions cache activations; off to
// time the difference. Process-wide; v4 and v5 alike; the same bits.
void set_conv2d_bf16_gathers_through_l1(bool on);
bool conv2d_bf16_gathers_through_l1();

// Whether v5's WgmmaIm2col, on a pass whose two operands the copy engine brings (the 3x3
// layers' forward and wgrad with Cin, the dgrad with Cout, a multiple of 64 after padding to
// 8), runs warp-specialised: a producer warpgroup requests, two consumer warpgroups multiply,
// no block barrier in the loop, 3 tiles of loads in flight (conv2d_bf16_v5.cu). Off: the
// plain loop of v5's other schedules. Process-wide; on by default; off to time or test the
// plain loop. The same bits.
void set_conv2d_bf16_v5_warp_specialised(bool on);
bool conv2d_bf16_v5_warp_specialised();

// One of the process-wide switches above set for a scope, as it was again at its end,
// however it ends (tests, and kernel-bench's rows on the other setting).
template <bool (*kGet)(), void (*kSet)(bool)>
class ScopedSwitch {
 public:
  explicit ScopedSwitch(bool on) : was_(kGet()) { kSet(on); }
  ~ScopedSwitch() { kSet(was_); }
  ScopedSwitch(const ScopedSwitch&) = delete;
  ScopedSwitch& operator=(const ScopedSwitch&) = delete;

 private:
  bool was_;
};
using ThinConvolutions = ScopedSwitch<conv2d_bf16_thin, set_conv2d_bf16_thin>;
using GathersThroughL1 =
    ScopedSwitch<conv2d_bf16_gathers_through_l1, set_conv2d_bf16_gathers_through_l1>;
using WarpSpecialisedV5 =
    ScopedSwitch<conv2d_bf16_v5_warp_specialised, set_conv2d_bf16_v5_warp_specialised>;

// How many slices a pass's GEMM (m x n outputs, a reduction of k) cuts its reduction into:
// as many as one wave of 128x128 tiles holds, each at least 8 stages long, at most 32
// (conv2d_bf16.cu). The same whichever block shape runs, so the shape never changes bits.
int conv2d_bf16_split_k(int64_t m, int64_t n, int64_t k);

// How many blocks of v5's kernels (Wgmma: a ring of 4 stages; WgmmaPaired: 3; WgmmaTall: 3
// of the tall tile) an SM of the current GPU holds at once, by the occupancy calculator
// (registers, shared memory, threads): the fewest of the three passes' kernels, as bf16
// activations run them. The paired ring is sized for 2, the others for 1. A GPU's answer:
// the CPU emulation refuses.
int conv2d_bf16_v5_blocks_an_sm(Bf16Tiles t);

int64_t conv2d_bf16_forward_workspace(const Conv2dShape& s);
// y = conv + b + per_sample[n] + residual (the optional addends as in conv2d.cuh), added in
// fp32 in the epilogue before the single store.
// w_bf16 (every entry): bf16(w) already, the weights' copy (engine/weight_copy.h), read
// instead of rounding w (the dgrad reads it in place when Cout is a multiple of 8); or null.
void conv2d_bf16_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample = nullptr,
                         const float* residual = nullptr, const uint16_t* w_bf16 = nullptr);
int64_t conv2d_bf16_backward_workspace(const Conv2dShape& s);
// dx += dgrad, or dx = dgrad with GradWrite::Assign (kernels/grad_write.h); dw likewise.
void conv2d_bf16_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* workspace,
                          const uint16_t* w_bf16 = nullptr,
                          GradWrite dx_write = GradWrite::Accumulate,
                          GradWrite dw_write = GradWrite::Accumulate);

// bf16 activations (engine activation dtype bf16): x, y, the residual, dy and dx as bf16
// bits (kernels/bf16.h); w, b, the per-sample addend, dw and db in fp32. An activation whose
// channels are a multiple of 8 is read in place (no conversion pass, no copy); others are
// padded into the workspace as above. y = bf16(the fp32 sum + the adds), rounded once;
// dx = bf16(float(dx) + the fp32 sum) (Assign: bf16(the sum)); db += the column sums of dy,
// in fp32. The workspace
// functions above size these too.
void conv2d_bf16_forward(const Conv2dShape& s, const uint16_t* x, const float* w, const float* b,
                         uint16_t* y, float* workspace, const float* per_sample = nullptr,
                         const uint16_t* residual = nullptr, const uint16_t* w_bf16 = nullptr);
void conv2d_bf16_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const uint16_t* dy, uint16_t* dx, float* dw, float* db,
                          float* workspace, const uint16_t* w_bf16 = nullptr,
                          GradWrite dx_write = GradWrite::Accumulate,
                          GradWrite dw_write = GradWrite::Accumulate);

// bf16 operands, fp32 results: for callers that make their own bf16 operands
// (conv2d_tf32.cu: TF32 as sums of products of bf16 pieces). x (N, H, W, Cin), dy
// (N, OH, OW, Cout) and w (KH, KW, Cin, Cout) as bf16 bits, read in place where their
// channels are a multiple of 8 (padded into the workspace otherwise); y, dx and dw fp32, as
// the fp32 entries write them. The GEMM runs every shape (never the direct kernels, which
// take one storage). The backward's two passes are separate calls, each on its own shape
// (the dgrad's reduction is over Cout, the wgrad's over the pixels).
int64_t conv2d_bf16_operands_forward_workspace(const Conv2dShape& s);
void conv2d_bf16_operands_forward(const Conv2dShape& s, const uint16_t* x, const uint16_t* w,
                                  const float* b, float* y, float* workspace,
                                  const float* per_sample = nullptr,
                                  const float* residual = nullptr);
int64_t conv2d_bf16_operands_backward_workspace(const Conv2dShape& s);
void conv2d_bf16_operands_dgrad(const Conv2dShape& s, const uint16_t* dy, const uint16_t* w,
                                float* dx, float* workspace,
                                GradWrite dx_write = GradWrite::Accumulate);
void conv2d_bf16_operands_wgrad(const Conv2dShape& s, const uint16_t* x, const uint16_t* dy,
                                float* dw, float* workspace,
                                GradWrite dw_write = GradWrite::Accumulate);

// TF32 products on fp32 operands read in place (conv2d_tf32.cu, whose entries choose
// between these and the bf16 pieces above): v4's kernel with mma.m16n8k8 .tf32 on the
// large or the small tiles, rounding A (x, dy) to TF32 as cvt.rna does (conv2d_bf16.cu,
// Tf32Products); the weights come rounded. The forward of x (N, H, W, Cin) by w_t, the
// weights transposed to (KH, KW, Cout, Cin); the stride-1 dgrad of dy by w (KH, KW, Cin,
// Cout). The reduction's channels (Cin, Cout) a multiple of 4 and every tensor 16-byte
// aligned (whole 16-byte chunks of 4 values); the workspace holds the split-K planes. y and
// dx as the fp32 entries write them.
int64_t conv2d_tf32_mma_forward_workspace(const Conv2dShape& s);
void conv2d_tf32_mma_forward(const Conv2dShape& s, const float* x, const float* w_t,
                             const float* b, float* y, float* workspace,
                             const float* per_sample = nullptr, const float* residual = nullptr);
int64_t conv2d_tf32_mma_dgrad_workspace(const Conv2dShape& s);
void conv2d_tf32_mma_dgrad(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                           float* workspace, GradWrite dx_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
