// TF32 convolution on tensor cores, two ways on v4's GEMM (conv2d_bf16.cu): TF32 products
// where the operands allow them, and elsewhere every TF32 operand as the exact sum of two
// bf16 pieces, every TF32 product as the sum of the four products of the pieces.
//
// Why. A TF32 convolution multiplies operands rounded to TF32 (11 significant bits) and sums
// the exact products in fp32. v3 (conv2d_tensor_core.cuh) does that with WMMA on v2's
// scalar loaders and ran at 0.02-0.05x cuDNN's TF32 convolutions on an H200
// (docs/gpu-report.md); v4 has the fast machinery (cp.async pipeline, ldmatrix, swizzles,
// KOrder, split-K) but multiplies bf16 (8 significant bits).
//
// 1. TF32 products (the forward; the dgrad at stride 1). An fp32 tensor of C channels is,
//    byte for byte, a tensor of 2C 16-bit halves: v4's loaders gather it unchanged, and
//    ldmatrix (no .trans) of a K-major tile gives each lane the 32-bit words mma.m16n8k8
//    .tf32 wants, from the addresses of the bf16 fragments (kernels/cuda/ptx.cuh). The
//    kernel rounds A's fragment registers as cvt.rna would (half a TF32 ulp added, the
//    tensor cores truncate: conv2d_bf16.cu, Tf32Products) and multiplies at TF32's rate: a
//    stage of 32 halves is 16 values, two m16n8k8 steps. Both operands must be K-major: the
//    forward's x, and its weights transposed to (taps, Cout, Cin) and rounded here (a small
//    pass), read by the dgrad's B loader with Cin and Cout swapped; the dgrad's dy as it is
//    and its weights rounded into the workspace.
//    A strided dgrad (its taps reordered by phase into bf16) and channels not a multiple of
//    4 (conv_in's 3) take the pieces.
// 2. bf16 pieces (the wgrad, whose operands are both MN-major: ldmatrix .trans moves 16-bit
//    elements, and would split a TF32 value across registers). A TF32 value t splits exactly
//    as t = hi + lo with hi and lo both bf16 (kernels/tf32.h: hi is t's top 16 bits, lo its
//    last 3 mantissa bits), so
//
//      x w = (xh + xl)(wh + wl) = xh wh + xh wl + xl wh + xl wl,
//
//    each product exact in fp32. The four products are four more terms of the reduction:
//    each operand laid out as four groups, the activations' as (hi, hi, lo, lo) and the
//    weights' (and the wgrad's dy's) as (hi, lo, hi, lo), so that group g of one meets group
//    g of the other, and v4's bf16 GEMM sums 4 K terms with nothing changed in it:
//
//      pass     reduction    groups along                 the shape v4 runs
//      forward  taps x Cin   x's and w's input channels   Cin -> 4 Cin8
//      dgrad    taps x Cout  dy's and w's output channels Cout -> 4 Cout8
//      wgrad    pixels       the images                   N -> 4 N
//
// Cost. TF32 products: v4's loads and shared-memory traffic per stage, half the values a
// stage and mma at half bf16's rate, plus 16 integer adds a warp per k-step (64x32 warp
// tile; sm_90 SASS, a stage of the 128x128 tile: 261 instructions in the forward and in the
// dgrad, bf16's 199 and 229). The
// pieces: 4x the bf16 products, which the tensor cores run at twice TF32's rate (twice the
// tensor-core time of TF32 products), and operands of 8 bytes an element where fp32 has 4,
// after a pass that reads each fp32 operand once and writes its four groups. Predicted from
// the H200's v4 figures (docs/kernels.md): 8-17x v3, 0.2-0.45x cuDNN's TF32. Not timed yet.
//
// Numbers. Products of operands rounded to TF32 as cvt.rna does (round_to_tf32), exact;
// sums in fp32 in the tensor cores' order (over 4x the terms for the pieces), so the result
// is the CPU's Precision::TF32 convolution up to the order of the sums (tests hold it to
// that: tests/test_cuda_conv_bf16.cpp).
//
// Workspace: the rounded (forward: transposed) weights and the planes (TF32 products), or
// the split operands
// and the bf16-operand GEMM's own (its planes; staging only where a wgrad operand's channels
// are not a multiple of 8). The backward runs the dgrad, then the wgrad in the same space
// (stream order).
#include "kernels/cuda/conv2d_tf32.cuh"

#include <algorithm>
#include <cstdint>

#include "engine/check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace_carve.h"
#include "kernels/tf32.h"

namespace ddpm::cuda {
namespace {

// Group g of a split operand holds the lo pieces where bit g of its mask is set, else the
// hi pieces: the activations' groups hi, hi, lo, lo; the weights' (and the wgrad's dy's)
// hi, lo, hi, lo. Group g of one meets group g of the other: (hi, hi), (hi, lo), (lo, hi),
// (lo, lo).
constexpr int kGroups = 4;
constexpr unsigned kActivationLo = 0b1100, kWeightLo = 0b1010;

// dst (outer, 4, inner_pad) = the pieces of src (outer, inner), zeros past inner in each
// group. One thread an element of src: it is read and split once, and its four groups
// written (consecutive threads write consecutive bf16 of each group).
__global__ void split_into_pieces(int64_t outer, int64_t inner, int64_t inner_pad,
                                  unsigned lo_mask, const float* src, uint16_t* dst) {
  DDPM_GRID_STRIDE(i, outer * inner_pad) {
    const int64_t o = i / inner_pad, j = i - o * inner_pad;
    const Bf16Pieces p = j < inner ? tf32_as_bf16_pieces(src[o * inner + j]) : Bf16Pieces{0, 0};
    uint16_t* d = dst + o * kGroups * inner_pad + j;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) d[g * inner_pad] = (lo_mask >> g) & 1 ? p.lo : p.hi;
  }
}

void split(int64_t outer, int64_t inner, int64_t inner_pad, unsigned lo_mask, const float* src,
           uint16_t* dst) {
  DDPM_LAUNCH(split_into_pieces, grid_for(outer * inner_pad), kThreads)(outer, inner, inner_pad,
                                                                       lo_mask, src, dst);
}

int64_t round_up8(int64_t c) { return (c + 7) / 8 * 8; }
int64_t taps(const Conv2dShape& s) { return static_cast<int64_t>(s.kh) * s.kw; }

// The shapes v4 runs: the forward's and the dgrad's reduction channels four groups of
// their count padded to 8; the wgrad's images four times as many.
Conv2dShape forward_shape(Conv2dShape s) {
  s.c_in = kGroups * round_up8(s.c_in);
  return s;
}
Conv2dShape dgrad_shape(Conv2dShape s) {
  s.c_out = kGroups * round_up8(s.c_out);
  return s;
}
Conv2dShape wgrad_shape(Conv2dShape s) {
  s.n *= kGroups;
  return s;
}

// A pass's workspace, laid out the same way sizing (base null) and placing: the bf16 pieces
// of its two operands (none for TF32 products), the rounded weights (TF32 products only:
// the kernel rounds A's registers as it multiplies, B's once here; conv2d_bf16.cu,
// Tf32Products), then the GEMM's own (the bf16-operand GEMM's workspace, or the TF32 GEMM's
// planes).
struct PassBuffers {
  uint16_t *a, *b;
  float *w, *rest;
  int64_t floats;
  PassBuffers(float* base, int64_t a_count, int64_t b_count, int64_t w_count,
              int64_t rest_floats) {
    Carve c(base);
    a = c.bf16(a_count);
    b = c.bf16(b_count);
    w = c.floats(w_count);
    rest = c.floats(rest_floats);
    floats = c.used();
  }
};
// Pieces: the forward's x and w, the dgrad's dy and w, the wgrad's x and dy.
PassBuffers forward_pieces(const Conv2dShape& s, float* base) {
  const Conv2dShape g = forward_shape(s);
  return {base, s.n * s.h * s.w * g.c_in, taps(s) * g.c_in * s.c_out, 0,
          conv2d_bf16_operands_forward_workspace(g)};
}
PassBuffers dgrad_pieces(const Conv2dShape& s, float* base) {
  const Conv2dShape g = dgrad_shape(s);
  return {base, s.n * s.out_h() * s.out_w() * g.c_out, taps(s) * s.c_in * g.c_out, 0,
          conv2d_bf16_operands_backward_workspace(g)};
}
PassBuffers wgrad_pieces(const Conv2dShape& s, float* base) {
  return {base, kGroups * s.n * s.h * s.w * s.c_in, kGroups * s.n * s.out_h() * s.out_w() * s.c_out,
          0, conv2d_bf16_operands_backward_workspace(wgrad_shape(s))};
}
// TF32 products: the forward's weights transposed and rounded, the dgrad's rounded.
PassBuffers forward_products(const Conv2dShape& s, float* base) {
  return {base, 0, 0, taps(s) * s.c_in * s.c_out, conv2d_tf32_mma_forward_workspace(s)};
}
PassBuffers dgrad_products(const Conv2dShape& s, float* base) {
  return {base, 0, 0, taps(s) * s.c_in * s.c_out, conv2d_tf32_mma_dgrad_workspace(s)};
}

// w_t (taps, Cout, Cin) = tf32(w (taps, Cin, Cout)) per tap, the TF32 forward's K-major B.
__global__ void transpose_taps_to_tf32(int64_t taps, int64_t c_in, int64_t c_out,
                                       const float* w, float* w_t) {
  DDPM_GRID_STRIDE(i, taps * c_in * c_out) {  // i over w_t: consecutive threads, Cin
    const int64_t ci = i % c_in, co = i / c_in % c_out, tap = i / (c_in * c_out);
    w_t[i] = ddpm::round_to_tf32(w[(tap * c_in + ci) * c_out + co]);
  }
}

bool g_mma = true;

// 16-byte chunks of 4 values, whole and aligned: the reduction's channels a multiple of 4
// and the activation read in place 16-byte aligned (the engine's tensors are 256-byte). The
// weights are read from their rounded copy in the workspace, aligned by Carve.
bool chunks_whole(int64_t channels, const float* activation) {
  return channels % 4 == 0 && reinterpret_cast<uintptr_t>(activation) % 16 == 0;
}
bool forward_on_products(const Conv2dShape& s, const float* x) {
  return g_mma && chunks_whole(s.c_in, x);
}
bool dgrad_on_products(const Conv2dShape& s, const float* dy) {
  return g_mma && s.stride == 1 && chunks_whole(s.c_out, dy);
}

}  // namespace

void set_conv2d_tf32_mma(bool on) { g_mma = on; }
bool conv2d_tf32_mma() { return g_mma; }

// Sized for either way, whichever the call takes.
int64_t conv2d_tf32_forward_workspace(const Conv2dShape& s) {
  return std::max(forward_pieces(s, nullptr).floats, forward_products(s, nullptr).floats);
}

void conv2d_tf32_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample,
                         const float* residual) {
  CHECK(workspace != nullptr, "the TF32 convolution needs conv2d_tf32_forward_workspace floats");
  if (forward_on_products(s, x)) {
    const PassBuffers p = forward_products(s, workspace);
    DDPM_LAUNCH(transpose_taps_to_tf32, grid_for(taps(s) * s.c_in * s.c_out), kThreads)(
        taps(s), s.c_in, s.c_out, w, p.w);
    return conv2d_tf32_mma_forward(s, x, p.w, b, y, p.rest, per_sample, residual);
  }
  const PassBuffers p = forward_pieces(s, workspace);
  const int64_t ci8 = round_up8(s.c_in);
  split(s.n * s.h * s.w, s.c_in, ci8, kActivationLo, x, p.a);
  split(taps(s), s.c_in * s.c_out, ci8 * s.c_out, kWeightLo, w, p.b);
  conv2d_bf16_operands_forward(forward_shape(s), p.a, p.b, b, y, p.rest, per_sample, residual);
}

int64_t conv2d_tf32_backward_workspace(const Conv2dShape& s) {
  return std::max({dgrad_pieces(s, nullptr).floats, wgrad_pieces(s, nullptr).floats,
                   dgrad_products(s, nullptr).floats});
}

void conv2d_tf32_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* workspace, GradWrite dx_write,
                          GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(workspace != nullptr, "the TF32 convolution needs conv2d_tf32_backward_workspace floats");
  const int64_t out_pixels = s.n * s.out_h() * s.out_w();
  if (dx && dgrad_on_products(s, dy)) {
    const PassBuffers p = dgrad_products(s, workspace);
    round_to_tf32(taps(s) * s.c_in * s.c_out, w, p.w);
    conv2d_tf32_mma_dgrad(s, dy, p.w, dx, p.rest, dx_write);
  } else if (dx) {
    const PassBuffers p = dgrad_pieces(s, workspace);
    const int64_t co8 = round_up8(s.c_out);
    split(out_pixels, s.c_out, co8, kActivationLo, dy, p.a);
    split(taps(s) * s.c_in, s.c_out, co8, kWeightLo, w, p.b);
    conv2d_bf16_operands_dgrad(dgrad_shape(s), p.a, p.b, dx, p.rest, dx_write);
  }
  if (dw) {  // the groups outermost: four batches of images, each whole
    const PassBuffers p = wgrad_pieces(s, workspace);
    split(1, s.n * s.h * s.w * s.c_in, s.n * s.h * s.w * s.c_in, kActivationLo, x, p.a);
    split(1, out_pixels * s.c_out, out_pixels * s.c_out, kWeightLo, dy, p.b);
    conv2d_bf16_operands_wgrad(wgrad_shape(s), p.a, p.b, dw, p.rest, dw_write);
  }
}

}  // namespace ddpm::cuda
