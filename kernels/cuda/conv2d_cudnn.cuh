// The engine's convolutions through cuDNN (`cuda_conv: cudnn`): the library baseline the
// whole training step can run on, next to our v1-v4 (conv2d.cuh), same contracts (NHWC,
// weights (KH, KW, Cin, Cout), forward overwrites y, backward accumulates into dx and dw).
// The glue cuDNN needs, and its cost, are in conv2d_cudnn.cu's design comment.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/grad_write.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// What cuDNN multiplies: fp32 with FMA math (no tensor cores), fp32 tensors with TF32
// tensor cores allowed (PyTorch's default for fp32 convolutions), or bf16 tensors with fp32
// accumulation (PyTorch's autocast): x, w and dy are rounded to bf16, and so are cuDNN's
// outputs y, dx and dw before they are widened back to our fp32 tensors.
enum class CudnnMath { Fp32, Tf32, Bf16 };

// Under benchmark (off by default; config key cuda_autotune), each shape's plan times every
// deterministic algorithm cuDNN's heuristics rank for a pass and keeps the fastest, as
// torch.backends.cudnn.benchmark does; else it takes the heuristics' first deterministic
// one (conv2d_cudnn_plan.cuh). Either way printed once per shape and math.
void set_conv2d_cudnn_benchmark(bool on);
bool conv2d_cudnn_benchmark();
// The most workspace an algorithm may ask for to be timed under benchmark (and in
// kernel-bench's "fastest algorithm" rows): the order of the model's largest activation
// (128 x 32 x 32 x 384 bf16: 96 MiB); cuDNN's FFT algorithms can ask for gigabytes at batch
// 128, which every call of the step would then allocate.
constexpr size_t kCudnnBenchmarkWorkspaceCap = size_t{256} << 20;

// False when cuDNN has no algorithm for the problem (its heuristics return none with a
// success status); conv2d.cu then runs our own kernel for that shape and says so once.
bool conv2d_cudnn_supported(const Conv2dShape& s, CudnnMath math);

// Workspaces in floats: the staged operands (bf16 copies, the padded input, the transposed
// weights) and cuDNN's own workspace.
int64_t conv2d_cudnn_forward_workspace(const Conv2dShape& s, CudnnMath math);
int64_t conv2d_cudnn_backward_workspace(const Conv2dShape& s, CudnnMath math);

// y = conv(x, w) + b + per_sample[n] + residual, each addend optional, added in fp32 after
// cuDNN's output (one pass). w_bf16 (every entry): bf16(w), the weights' copy
// (engine/weight_copy.h), transposed into cuDNN's filter in place of w in CudnnMath::Bf16;
// or null.
void conv2d_cudnn_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                          float* y, CudnnMath math, float* workspace, const float* per_sample,
                          const float* residual, const uint16_t* w_bf16 = nullptr);
// dx += dgrad (dx = dgrad with GradWrite::Assign: cuDNN's beta 0), dw += wgrad (dw = wgrad
// with Assign: transposed into dw without adding); either may be null; the bias gradient is
// the caller's.
void conv2d_cudnn_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                           float* dx, float* dw, CudnnMath math, float* workspace,
                           const uint16_t* w_bf16 = nullptr,
                           GradWrite dx_write = GradWrite::Accumulate,
                           GradWrite dw_write = GradWrite::Accumulate);

// The same on bf16 activations (bits: x, y, the residual, dy, dx), in CudnnMath::Bf16: cuDNN
// reads x and dy as they are (staged only for asymmetric padding), y = bf16(bf16(conv) +
// the adds), dx = bf16(float(dx) + bf16 dgrad) (cuDNN's beta 1; a padded x's gradient is
// cropped and added by our pass); dw fp32 as above. The workspace functions above (math
// Bf16) size these too.
void conv2d_cudnn_forward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const float* b, uint16_t* y, float* workspace, const float* per_sample,
                          const uint16_t* residual, const uint16_t* w_bf16 = nullptr);
void conv2d_cudnn_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                           const uint16_t* dy, uint16_t* dx, float* dw, float* workspace,
                           const uint16_t* w_bf16 = nullptr,
                           GradWrite dx_write = GradWrite::Accumulate,
                           GradWrite dw_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
