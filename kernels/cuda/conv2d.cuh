// CUDA 2-D convolution (NHWC, weights (KH, KW, Cin, Cout)), forward, dgrad and wgrad, same
// contracts as kernels/cpu/conv2d.h (f32; forward overwrites y, backward accumulates).
// Two versions side by side in conv2d.cu, selectable per call:
//   Naive  v1: one thread per output value, a plain loop over the reduction
//   Tiled  v2: implicit GEMM with 64x64 or 128x128 shared-memory tiles (4x4 or 8x8 outputs
//              a thread), split-K for the weight gradient when a workspace is given
//   TensorCore v3: v2's tiling with TF32 tensor-core products (WMMA; sm_80+), ~1e-3
//              relative rounding like cuDNN's default fp32 convolutions
//   Bf16TensorCore v4: bf16 mma.sync with a cp.async pipeline and ldmatrix (conv2d_bf16.cu;
//              sm_80+): operands rounded to bf16 (2^-8 relative), fp32 accumulation
//   Tf32TensorCore v4 in TF32 (conv2d_tf32.cu; sm_80+): v3's numbers on v4's GEMM, by
//              mma.m16n8k8 .tf32 on the fp32 operands (forward, stride-1 dgrad) or on
//              each operand's two bf16 pieces (the rest)
//   Bf16x6TensorCore v4 in fp32 (conv2d_pieces.cu; sm_80+): each fp32 operand as three bf16
//              pieces, the six largest of their nine products summed by v4's bf16 GEMM:
//              each product within 2^-23 of itself (fp32's rounding: 2^-24)
// and the library baseline, cuDNN (conv2d_cudnn.cu), in three maths:
//   Cudnn      fp32 with FMA math (v1/v2's numbers), CudnnTf32: TF32 tensor cores allowed
//              (v3's), CudnnBf16: bf16 tensors (v4's operands, and y, dx, dw rounded to bf16).
//              A shape cuDNN has no algorithm for runs on v2 / v4 in TF32 / v4 (printed
//              once).
// and, per shape and pass, the faster of the two in one math (conv2d_autotune.cuh): AutoFp32
// (v2 or cuDNN fp32), AutoTf32 (v4 in TF32 or cuDNN TF32), AutoBf16 (v4 or cuDNN bf16).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

enum class ConvAlgo {
  Naive, Tiled, TensorCore, Bf16TensorCore, Tf32TensorCore, Bf16x6TensorCore, Cudnn, CudnnTf32,
  CudnnBf16, AutoFp32, AutoTf32, AutoBf16
};
const char* conv_algo_name(ConvAlgo algo);  // "v4 bf16", "cuDNN bf16", ...
// v2's block tile: 128x128 (8x8 outputs a thread, one block an SM) where those blocks fill
// every SM at least twice, else 64x64 (4x4); or one of them forced (tests, kernel-bench).
// The results are the same bits either way: each output is the same sum over k in order.
enum class TiledTiles { Heuristic, Small, Large };
void set_conv2d_tiled_tiles(TiledTiles t);  // process-wide; Heuristic by default
// The choice for a GEMM of m x n outputs whose reduction splits in `splits` slices.
bool conv2d_tiled_takes_large_tiles(int64_t m, int64_t n, int splits);
// v2 stages each thread's share of a tile as one 16-byte run (8 on the 64x64 tiles) where
// the operands allow it (channels a multiple of the run, aligned); off: element by element
// always (tests: the same bits either way). Process-wide; on by default.
void set_conv2d_tiled_runs(bool on);
// v2's launches so far in this process, by tile, and how many of them in runs (tests: that
// a forced tile or walk is what ran).
struct TiledLaunches {
  int64_t small = 0, large = 0, runs = 0;
};
TiledLaunches conv2d_tiled_launches();

// False for a cuDNN algo cuDNN cannot run on s (then our kernel of the same math runs).
bool conv2d_algo_runs(const Conv2dShape& s, ConvAlgo algo);

// True when the input gradient alone needs the backward workspace (v4's and cuDNN's staged
// operands); v1-v3 use it only for the weight and bias gradients.
bool conv2d_dgrad_uses_workspace(ConvAlgo algo);

// workspace: conv2d_forward_workspace(s, algo) floats (0 but for v4, whose bf16 operand
// copies live there, v4 in TF32 and in fp32, whose transposed weights or bf16 pieces do, and
// cuDNN, whose staged operands and own workspace do).
// y = conv + b + per_sample[n] + residual, each addend optional: per_sample (N, Cout),
// residual (N, OH, OW, Cout); v4 adds them in its epilogue, cuDNN's path in one pass after
// the library's output, v1-v3 in separate passes.
// w_bf16 (every entry): bf16(w), the weights' copy (engine/weight_copy.h), which the bf16
// maths (v4, cuDNN bf16) read instead of rounding w at each call; the others ignore it.
int64_t conv2d_forward_workspace(const Conv2dShape& s, ConvAlgo algo);
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                    float* y, ConvAlgo algo, float* workspace = nullptr,
                    const float* per_sample = nullptr, const float* residual = nullptr,
                    const uint16_t* w_bf16 = nullptr);
// Any of dx, dw, db may be null. db uses the deterministic column sum of elementwise.cu.
// dx and dw accumulate, or with GradWrite::Assign (dx_write, dw_write) are written outright
// (kernels/grad_write.h: the first contribution to the gradient, into a buffer never zeroed:
// a parameter's dw is a window on the flat gradient buffer and accumulates, the folded
// kernels of upsample_conv3x3 are written); db accumulates.
// workspace: null, or conv2d_backward_workspace(s, algo) floats, which lets the tiled wgrad
// split its long reduction over more blocks (deterministic split-K; conv2d.cu); v4 needs it.
int64_t conv2d_backward_workspace(const Conv2dShape& s, ConvAlgo algo);
void conv2d_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, ConvAlgo algo, float* workspace = nullptr,
                     const uint16_t* w_bf16 = nullptr, GradWrite dx_write = GradWrite::Accumulate,
                     GradWrite dw_write = GradWrite::Accumulate);

// bf16 activations (bits: x, y, the residual, dy, dx; w, b, per_sample, dw, db fp32), for the
// algos whose math is bf16 (conv2d_reads_bf16): v4, cuDNN bf16 (v4 where cuDNN cannot run the
// shape) and the faster of the two. The same workspaces as above.
bool conv2d_reads_bf16(ConvAlgo algo);
void conv2d_forward(const Conv2dShape& s, const uint16_t* x, const float* w, const float* b,
                    uint16_t* y, ConvAlgo algo, float* workspace, const float* per_sample,
                    const uint16_t* residual, const uint16_t* w_bf16 = nullptr);
void conv2d_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                     const uint16_t* dy, uint16_t* dx, float* dw, float* db, ConvAlgo algo,
                     float* workspace, const uint16_t* w_bf16 = nullptr,
                     GradWrite dx_write = GradWrite::Accumulate,
                     GradWrite dw_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
