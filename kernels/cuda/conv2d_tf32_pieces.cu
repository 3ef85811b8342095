// TF32 convolution on bf16 tensor cores: every TF32 operand as the exact sum of two bf16
// pieces, every TF32 product as the sum of the four products of the pieces.
//
// Why. A TF32 convolution multiplies operands rounded to TF32 (11 significant bits) and sums
// the exact products in fp32. v3 (conv2d_tensor_core.cuh) does that with WMMA on v2's
// scalar loaders and ran at 0.02-0.05x cuDNN's TF32 convolutions on an H200
// (docs/gpu-report.md); v4 (conv2d_bf16.cu) has the fast machinery (cp.async pipeline,
// ldmatrix, swizzles, KOrder, split-K, v5 on wgmma) but multiplies bf16 (8 significant
// bits). A TF32 value t splits exactly as t = hi + lo with hi and lo both bf16
// (kernels/tf32.h: hi is t's top 16 bits, lo its last 3 mantissa bits), so
//
//   x w = (xh + xl)(wh + wl) = xh wh + xh wl + xl wh + xl wl,
//
// each product exact in fp32. The four products are four more terms of the same reduction:
// lay each operand out as four groups, the activations' as (hi, hi, lo, lo) and the
// weights' as (hi, lo, hi, lo), so that group g of one meets group g of the other, and v4
// sums 4 K terms with nothing changed in its kernels:
//
//   pass     reduction   groups along              shape v4 runs
//   forward  taps x Cin  x's and w's input channels Cin -> 4 x Cin8 (x (N,H,W,4 Cin8),
//                                                   w (taps, 4 Cin8, Cout))
//   dgrad    taps x Cout dy's and w's output chans. Cout -> 4 x Cout8 (dy (N,OH,OW,4 Cout8),
//                                                   w (taps, Cin, 4 Cout8))
//   wgrad    pixels      the images                 N -> 4 N (x as (hi, hi, lo, lo) images,
//                                                   dy as (hi, lo, hi, lo))
//
// Cost. 4x the bf16 products, which the tensor cores run at twice TF32's rate: twice the
// tensor-core time of a native TF32 kernel (mma.sync .tf32, m16n8k8), and the operands 8
// bytes an element where fp32 is 4 (four bf16 groups), read from L2 by every block that
// reads them. A split pass reads each fp32 operand once and writes its groups (the fp32
// path's conversion to bf16 reads 4 bytes and writes 2). What it buys: all of v4's and v5's
// tiles, autotuner and split plan for TF32 at once, where a native TF32 kernel would need
// its own fragment loads (ldmatrix .trans moves 16-bit elements only, and the forward's B
// and both wgrad operands are MN-major: conv2d_bf16.cu).
//
// Numbers. The sums are fp32 over 4x the terms, in the tensor cores' order; the products
// are those of the operands rounded to TF32 as cvt.rna does (round_to_tf32), so the result
// is the CPU's Precision::TF32 convolution up to the order of the sums
// (tests/test_cuda_ops.cpp holds it to that).
//
// Workspace: the split operands, then the bf16-operand GEMM's own (its planes; staging only
// where a wgrad operand's channels are not a multiple of 8). The backward runs the dgrad,
// then the wgrad in the same space (stream order).
#include "kernels/cuda/conv2d_tf32_pieces.cuh"

#include <algorithm>

#include "engine/check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d_bf16.cuh"
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

// Each layout walks the workspace the same way sizing (base null) and placing.
struct ForwardPieces {
  uint16_t *x, *w;
  float* rest;
  int64_t floats;
  ForwardPieces(const Conv2dShape& s, float* base) {
    const Conv2dShape g = forward_shape(s);
    Carve c(base);
    x = c.bf16(s.n * s.h * s.w * g.c_in);
    w = c.bf16(taps(s) * g.c_in * s.c_out);
    rest = c.floats(conv2d_bf16_operands_forward_workspace(g));
    floats = c.used();
  }
};
struct DgradPieces {
  uint16_t *dy, *w;
  float* rest;
  int64_t floats;
  DgradPieces(const Conv2dShape& s, float* base) {
    const Conv2dShape g = dgrad_shape(s);
    Carve c(base);
    dy = c.bf16(s.n * s.out_h() * s.out_w() * g.c_out);
    w = c.bf16(taps(s) * s.c_in * g.c_out);
    rest = c.floats(conv2d_bf16_operands_backward_workspace(g));
    floats = c.used();
  }
};
struct WgradPieces {
  uint16_t *x, *dy;
  float* rest;
  int64_t floats;
  WgradPieces(const Conv2dShape& s, float* base) {
    Carve c(base);
    x = c.bf16(kGroups * s.n * s.h * s.w * s.c_in);
    dy = c.bf16(kGroups * s.n * s.out_h() * s.out_w() * s.c_out);
    rest = c.floats(conv2d_bf16_operands_backward_workspace(wgrad_shape(s)));
    floats = c.used();
  }
};

}  // namespace

int64_t conv2d_tf32_pieces_forward_workspace(const Conv2dShape& s) {
  return ForwardPieces(s, nullptr).floats;
}

void conv2d_tf32_pieces_forward(const Conv2dShape& s, const float* x, const float* w,
                                const float* b, float* y, float* workspace,
                                const float* per_sample, const float* residual) {
  CHECK(workspace != nullptr, "the TF32 convolution on bf16 pieces needs "
                              "conv2d_tf32_pieces_forward_workspace floats");
  const ForwardPieces p(s, workspace);
  const int64_t ci8 = round_up8(s.c_in);
  split(s.n * s.h * s.w, s.c_in, ci8, kActivationLo, x, p.x);
  split(taps(s), s.c_in * s.c_out, ci8 * s.c_out, kWeightLo, w, p.w);
  conv2d_bf16_operands_forward(forward_shape(s), p.x, p.w, b, y, p.rest, per_sample, residual);
}

int64_t conv2d_tf32_pieces_backward_workspace(const Conv2dShape& s) {
  return std::max(DgradPieces(s, nullptr).floats, WgradPieces(s, nullptr).floats);
}

void conv2d_tf32_pieces_backward(const Conv2dShape& s, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* workspace,
                                 GradWrite dx_write, GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(workspace != nullptr, "the TF32 convolution on bf16 pieces needs "
                              "conv2d_tf32_pieces_backward_workspace floats");
  const int64_t out_pixels = s.n * s.out_h() * s.out_w();
  if (dx) {
    const DgradPieces p(s, workspace);
    const int64_t co8 = round_up8(s.c_out);
    split(out_pixels, s.c_out, co8, kActivationLo, dy, p.dy);
    split(taps(s) * s.c_in, s.c_out, co8, kWeightLo, w, p.w);
    conv2d_bf16_operands_dgrad(dgrad_shape(s), p.dy, p.w, dx, p.rest, dx_write);
  }
  if (dw) {  // the groups outermost: four batches of images, each whole
    const WgradPieces p(s, workspace);
    split(1, s.n * s.h * s.w * s.c_in, s.n * s.h * s.w * s.c_in, kActivationLo, x, p.x);
    split(1, out_pixels * s.c_out, out_pixels * s.c_out, kWeightLo, dy, p.dy);
    conv2d_bf16_operands_wgrad(wgrad_shape(s), p.x, p.dy, dw, p.rest, dw_write);
  }
}

}  // namespace ddpm::cuda
