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
//    elements, and would split a TF32 value across registers; a strided dgrad; odd
//    channels): each TF32 operand as the exact sum of two bf16 pieces, the four products of
//    the pieces summed by the bf16 GEMM as four times the reduction's terms
//    (conv2d_pieces.cu, PieceSplit::Tf32).
//
// Cost. TF32 products: v4's loads and shared-memory traffic per stage, half the values a
// stage and mma at half bf16's rate, plus 16 integer adds a warp per k-step (64x32 warp
// tile; sm_90 SASS, a stage of the 128x128 tile: 261 instructions in the forward and in the
// dgrad, bf16's 199 and 229). The pieces: conv2d_pieces.cu. Predicted from the H200's v4
// figures (docs/kernels.md): 8-17x v3, 0.2-0.45x cuDNN's TF32. Not timed yet.
//
// Numbers. Products of operands rounded to TF32 as cvt.rna does (round_to_tf32), exact;
// sums in fp32 in the tensor cores' order (over 4x the terms for the pieces), so the result
// is the CPU's Precision::TF32 convolution up to the order of the sums (tests hold it to
// that: tests/test_cuda_conv_bf16.cpp).
//
// Workspace: the rounded (forward: transposed) weights and the TF32 GEMM's planes, or the
// pieces' (conv2d_pieces.cu). The backward runs the dgrad, then the wgrad in the same space
// (stream order).
#include "kernels/cuda/conv2d_tf32.cuh"

#include <algorithm>
#include <cstdint>

#include "engine/check.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_pieces.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/workspace_carve.h"
#include "kernels/tf32.h"

namespace ddpm::cuda {
namespace {

// A pass's workspace on TF32 products, laid out the same way sizing (base null) and placing:
// the rounded weights (the kernel rounds A's registers as it multiplies, B's once here;
// conv2d_bf16.cu, Tf32Products), then the TF32 GEMM's planes.
struct PassBuffers {
  float *w, *rest;
  int64_t floats;
  PassBuffers(float* base, int64_t w_count, int64_t rest_floats) {
    Carve c(base);
    w = c.floats(w_count);
    rest = c.floats(rest_floats);
    floats = c.used();
  }
};
// TF32 products: the forward's weights transposed and rounded, the dgrad's rounded.
PassBuffers forward_products(const Conv2dShape& s, float* base) {
  return {base, s.taps() * s.c_in * s.c_out, conv2d_tf32_mma_forward_workspace(s)};
}
PassBuffers dgrad_products(const Conv2dShape& s, float* base) {
  return {base, s.taps() * s.c_in * s.c_out, conv2d_tf32_mma_dgrad_workspace(s)};
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
  return std::max(conv2d_pieces_forward_workspace(s, PieceSplit::Tf32),
                  forward_products(s, nullptr).floats);
}

void conv2d_tf32_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample,
                         const float* residual) {
  CHECK(workspace != nullptr, "the TF32 convolution needs conv2d_tf32_forward_workspace floats");
  if (forward_on_products(s, x)) {
    const PassBuffers p = forward_products(s, workspace);
    DDPM_LAUNCH(transpose_taps_to_tf32, grid_for(s.taps() * s.c_in * s.c_out), kThreads)(
        s.taps(), s.c_in, s.c_out, w, p.w);
    return conv2d_tf32_mma_forward(s, x, p.w, b, y, p.rest, per_sample, residual);
  }
  conv2d_pieces_forward(s, PieceSplit::Tf32, x, w, b, y, workspace, per_sample, residual);
}

int64_t conv2d_tf32_backward_workspace(const Conv2dShape& s) {
  return std::max(conv2d_pieces_backward_workspace(s, PieceSplit::Tf32),
                  dgrad_products(s, nullptr).floats);
}

void conv2d_tf32_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* workspace, GradWrite dx_write,
                          GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(workspace != nullptr, "the TF32 convolution needs conv2d_tf32_backward_workspace floats");
  const bool products = dx && dgrad_on_products(s, dy);
  if (products) {
    const PassBuffers p = dgrad_products(s, workspace);
    round_to_tf32(s.taps() * s.c_in * s.c_out, w, p.w);
    conv2d_tf32_mma_dgrad(s, dy, p.w, dx, p.rest, dx_write);
  }
  conv2d_pieces_backward(s, PieceSplit::Tf32, x, w, dy, products ? nullptr : dx, dw, workspace,
                         dx_write, dw_write);
}

}  // namespace ddpm::cuda
