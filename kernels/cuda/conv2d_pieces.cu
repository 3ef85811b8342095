// Convolutions on bf16 pieces: a TF32 or fp32 convolution run by v4's bf16 GEMM
// (conv2d_bf16.cu) with nothing changed in it.
//
// Why. v4 multiplies bf16 (8 significant bits) on tensor cores at up to 989 TFLOP/s on an
// H100; fp32 FMA runs at 67. A value of more bits is exactly a sum of bf16 pieces, and a
// product of two such sums is the sum of the products of their pieces, each exact in fp32:
//
//   TF32 (11 bits): t = hi + lo (kernels/tf32.h: hi its top 16 bits, lo its last 3)
//     x w = xh wh + xh wl + xl wh + xl wl                                  4 products
//   fp32 (24 bits): f = hi + mid + lo (kernels/bf16.h: each the remainder rounded to bf16,
//     |mid| <= 2^-8 |f|, |lo| <= 2^-16 |f|)
//     x w = xh wh + xh wm + xm wh + xh wl + xm wm + xl wh                  6 of the 9
//
// The three fp32 products left out (xm wl, xl wm, xl wl) are at most 2^-24 + 2^-24 + 2^-32
// of |x w| together; an fp32 multiply's own rounding is up to 2^-24 of it. So bf16x6 gives
// each product to within about one fp32 rounding (Henry, Tang, Heinecke, "Leveraging the
// bfloat16 artificial intelligence datatype for higher-precision computations", ARITH 2019,
// build fp32 inner products from bf16 pieces this way; cuBLAS's fp32 emulation on bf16 keeps
// all nine products).
//
// How. The products are more terms of the reduction: each operand is laid out as G groups
// of pieces, the activations' (x; the dgrad's dy) and the weights' (w; the wgrad's dy) each
// holding in group g the piece that group g of the other meets:
//
//   split   G   activations' pieces        weights' pieces
//   Tf32    4   hi hi lo lo                hi lo hi lo
//   Fp32    6   hi hi mid hi mid lo        hi mid hi lo mid hi
//
//   pass     reduction    groups along                 the shape v4 runs
//   forward  taps x Cin   x's and w's input channels   Cin -> G Cin8
//   dgrad    taps x Cout  dy's and w's output channels Cout -> G Cout8
//   wgrad    pixels       the images                   N -> G N
//
// Cost. G times the bf16 products (the tensor cores run them at bf16's rate: TF32's pieces
// cost twice the tensor-core time of TF32 products, fp32's six about what TF32x3 costs), and
// operands of 2G bytes an element where fp32 has 4, after a pass that reads each fp32
// operand once and writes its G groups. Predicted for fp32 from the H200's v4 figures on the
// 32x32 128->128 layer at batch 128 (docs/kernels.md): ~1.0 / 1.3 / 1.8 ms forward / dgrad /
// wgrad, 4x v2 and about cuDNN's fp32. Not timed yet.
//
// Numbers. The pieces' products are exact and sum, in fp32 in the tensor cores' order over
// G times the terms, to the TF32 products (Tf32) or to within 2^-23 of the fp32 products
// (Fp32). tests/test_cuda_conv_bf16.cpp holds both to the double reference.
//
// Workspace: the two operands' pieces, then the bf16-operand GEMM's own (its planes; staging
// only where a wgrad operand's channels are not a multiple of 8). The backward runs the
// dgrad, then the wgrad in the same space (stream order).
#include "kernels/cuda/conv2d_pieces.cuh"

#include <algorithm>
#include <cstdint>

#include "engine/check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace_carve.h"
#include "kernels/tf32.h"

namespace ddpm::cuda {
namespace {

// The pieces of a value, hi first, and the groups: group g of the activations' operand holds
// piece (activation >> 2g) & 3, of the weights' piece (weight >> 2g) & 3.
template <PieceSplit S>
struct Split;
template <>
struct Split<PieceSplit::Tf32> {
  static constexpr int kGroups = 4;
  static constexpr unsigned kActivation = 0b01'01'00'00, kWeight = 0b01'00'01'00;
  __device__ static void pieces(float f, uint16_t* p) {
    const Bf16Pieces t = tf32_as_bf16_pieces(f);
    p[0] = t.hi;
    p[1] = t.lo;
  }
};
template <>
struct Split<PieceSplit::Fp32> {
  static constexpr int kGroups = 6;
  static constexpr unsigned kActivation = 0b10'01'00'01'00'00, kWeight = 0b00'01'10'00'01'00;
  __device__ static void pieces(float f, uint16_t* p) {
    const Bf16Triple t = fp32_as_bf16_pieces(f);
    p[0] = t.hi;
    p[1] = t.mid;
    p[2] = t.lo;
  }
};

int groups(PieceSplit split) {
  return split == PieceSplit::Tf32 ? Split<PieceSplit::Tf32>::kGroups
                                   : Split<PieceSplit::Fp32>::kGroups;
}

// dst (outer, G, inner_pad) = the pieces of src (outer, inner), zeros past inner in each
// group; which: the groups' pieces (Split's kActivation or kWeight). One thread an element
// of src: it is read and split once, and its G groups written (consecutive threads write
// consecutive bf16 of each group).
template <PieceSplit S>
__global__ void split_into_pieces(int64_t outer, int64_t inner, int64_t inner_pad,
                                  unsigned which, const float* src, uint16_t* dst) {
  constexpr int G = Split<S>::kGroups;
  DDPM_GRID_STRIDE(i, outer * inner_pad) {
    const int64_t o = i / inner_pad, j = i - o * inner_pad;
    uint16_t p[3] = {0, 0, 0};
    if (j < inner) Split<S>::pieces(src[o * inner + j], p);
    uint16_t* d = dst + o * G * inner_pad + j;
#pragma unroll
    for (int g = 0; g < G; ++g) d[g * inner_pad] = p[(which >> (2 * g)) & 3u];
  }
}

enum class Side { Activation, Weight };

void split(PieceSplit split, Side side, int64_t outer, int64_t inner, int64_t inner_pad,
           const float* src, uint16_t* dst) {
  const bool act = side == Side::Activation;
  if (split == PieceSplit::Tf32) {
    using T = Split<PieceSplit::Tf32>;
    DDPM_LAUNCH(split_into_pieces<PieceSplit::Tf32>, grid_for(outer * inner_pad), kThreads)(
        outer, inner, inner_pad, act ? T::kActivation : T::kWeight, src, dst);
  } else {
    using F = Split<PieceSplit::Fp32>;
    DDPM_LAUNCH(split_into_pieces<PieceSplit::Fp32>, grid_for(outer * inner_pad), kThreads)(
        outer, inner, inner_pad, act ? F::kActivation : F::kWeight, src, dst);
  }
}

// The shapes v4 runs: the forward's and the dgrad's reduction channels G groups of their
// count padded to 8; the wgrad's images G times as many.
Conv2dShape forward_shape(Conv2dShape s, int g) {
  s.c_in = g * round_up8(s.c_in);
  return s;
}
Conv2dShape dgrad_shape(Conv2dShape s, int g) {
  s.c_out = g * round_up8(s.c_out);
  return s;
}
Conv2dShape wgrad_shape(Conv2dShape s, int g) {
  s.n *= g;
  return s;
}

// A pass's workspace, laid out the same way sizing (base null) and placing: the pieces of
// its two operands (the forward's x and w, the dgrad's dy and w, the wgrad's x and dy), then
// the bf16-operand GEMM's own.
struct PassBuffers {
  uint16_t *a, *b;
  float* rest;
  int64_t floats;
  PassBuffers(float* base, int64_t a_count, int64_t b_count, int64_t rest_floats) {
    Carve c(base);
    a = c.bf16(a_count);
    b = c.bf16(b_count);
    rest = c.floats(rest_floats);
    floats = c.used();
  }
};
PassBuffers forward_buffers(const Conv2dShape& s, int g, float* base) {
  const Conv2dShape v4 = forward_shape(s, g);
  return {base, s.n * s.h * s.w * v4.c_in, s.taps() * v4.c_in * s.c_out,
          conv2d_bf16_operands_forward_workspace(v4)};
}
PassBuffers dgrad_buffers(const Conv2dShape& s, int g, float* base) {
  const Conv2dShape v4 = dgrad_shape(s, g);
  return {base, s.n * s.out_h() * s.out_w() * v4.c_out, s.taps() * s.c_in * v4.c_out,
          conv2d_bf16_operands_backward_workspace(v4)};
}
PassBuffers wgrad_buffers(const Conv2dShape& s, int g, float* base) {
  return {base, g * s.n * s.h * s.w * s.c_in, g * s.n * s.out_h() * s.out_w() * s.c_out,
          conv2d_bf16_operands_backward_workspace(wgrad_shape(s, g))};
}

}  // namespace

int64_t conv2d_pieces_forward_workspace(const Conv2dShape& s, PieceSplit split) {
  return forward_buffers(s, groups(split), nullptr).floats;
}

void conv2d_pieces_forward(const Conv2dShape& s, PieceSplit sp, const float* x, const float* w,
                           const float* b, float* y, float* workspace, const float* per_sample,
                           const float* residual) {
  CHECK(workspace != nullptr, "a convolution on bf16 pieces needs "
                              "conv2d_pieces_forward_workspace floats");
  const int g = groups(sp);
  const PassBuffers p = forward_buffers(s, g, workspace);
  const int64_t ci8 = round_up8(s.c_in);
  split(sp, Side::Activation, s.n * s.h * s.w, s.c_in, ci8, x, p.a);
  split(sp, Side::Weight, s.taps(), s.c_in * s.c_out, ci8 * s.c_out, w, p.b);
  conv2d_bf16_operands_forward(forward_shape(s, g), p.a, p.b, b, y, p.rest, per_sample,
                               residual);
}

int64_t conv2d_pieces_backward_workspace(const Conv2dShape& s, PieceSplit split) {
  const int g = groups(split);
  return std::max(dgrad_buffers(s, g, nullptr).floats, wgrad_buffers(s, g, nullptr).floats);
}

void conv2d_pieces_backward(const Conv2dShape& s, PieceSplit sp, const float* x,
                            const float* w, const float* dy, float* dx, float* dw,
                            float* workspace, GradWrite dx_write, GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(workspace != nullptr, "a convolution on bf16 pieces needs "
                              "conv2d_pieces_backward_workspace floats");
  const int g = groups(sp);
  const int64_t out_pixels = s.n * s.out_h() * s.out_w();
  if (dx) {
    const PassBuffers p = dgrad_buffers(s, g, workspace);
    const int64_t co8 = round_up8(s.c_out);
    split(sp, Side::Activation, out_pixels, s.c_out, co8, dy, p.a);
    split(sp, Side::Weight, s.taps() * s.c_in, s.c_out, co8, w, p.b);
    conv2d_bf16_operands_dgrad(dgrad_shape(s, g), p.a, p.b, dx, p.rest, dx_write);
  }
  if (dw) {  // the groups outermost: G batches of images, each whole
    const PassBuffers p = wgrad_buffers(s, g, workspace);
    const int64_t x_count = s.n * s.h * s.w * s.c_in, dy_count = out_pixels * s.c_out;
    split(sp, Side::Activation, 1, x_count, x_count, x, p.a);
    split(sp, Side::Weight, 1, dy_count, dy_count, dy, p.b);
    conv2d_bf16_operands_wgrad(wgrad_shape(s, g), p.a, p.b, dw, p.rest, dw_write);
  }
}

}  // namespace ddpm::cuda
