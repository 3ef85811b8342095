// The engine's ops: each entry checks shapes, dtypes and devices (errors name the op and the
// offending tensor), runs the kernel for the tensors' device and dtype (CPU: f32 or f64;
// CUDA: f32), and, when an input requires grad and the tape is on, records its backward rule.
// Layouts: images NHWC, tokens (B, L, C), linear weights (in, out), conv weights
// (KH, KW, Cin, Cout). Implementations: engine/ops/<family>.cpp; kernels: kernels/cpu and
// kernels/cuda files of the same family name.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"
#include "kernels/shapes.h"

namespace ddpm {

// ---- which CPU kernels run (engine/ops/op_util.cpp) ----
// f32 CPU tensors run the fast kernels of kernels/cpu_fast (oneDNN convolutions, OpenBLAS
// GEMMs for linear layers and attention; the default when the build has them) or the
// reference kernels of kernels/cpu, the ground truth every other path is tested against and
// the only ones for f64. Process-wide, set once per run (config key cpu_kernels).
enum class CpuKernels { Reference, Fast };
bool cpu_fast_kernels_built();
void set_cpu_kernels(CpuKernels k);  // Fast in a build without them: an error saying so
CpuKernels cpu_kernels();

// ---- the precision of matrix products (engine/ops/op_util.cpp) ----
// F32: convolutions and linear layers multiply fp32 values (the default). BF16: their
// operands (activations, weights and incoming gradients) are rounded to bf16 and the
// products summed in fp32, as bf16 tensor cores and PyTorch's autocast compute; attention
// rounds q, k, v, dout and its probabilities where they multiply (FlashAttention's model);
// everything else (norms, softmax statistics, the loss, biases and their gradients, the
// optimiser) stays fp32.
// TF32: the same operands rounded to TF32 (kernels/tf32.h), as TF32 tensor cores and
// PyTorch's allow_tf32 compute. The CPU paths round the same operands the same way, so
// both are tested everywhere. On CUDA, BF16 runs the convolutions on v4 (bf16 tensor
// cores) and TF32 on v3 (TF32 WMMA) whatever set_conv_algorithm says, unless it says cuDNN
// or Auto (then cuDNN, or the faster of the two, in that math). f64 tensors ignore
// it (gradient checks). Process-wide, config key `precision` (docs/precision.md).
enum class Precision { F32, TF32, BF16 };
void set_precision(Precision p);
Precision precision();

// ---- bf16 storage (engine/ops/cast.cpp) ----
// x converted to dtype, f32 <-> bf16 (nearest, ties to even: kernels/bf16.h; widening is
// exact); x itself when it has that dtype. Recorded: the gradient is converted back (added
// into x's gradient in fp32 and rounded once when that gradient is bf16).
Tensor cast(const Tensor& x, DType dtype);
// The dtype the models store activations in: F32 (default) or BF16, with the weights'
// master copy, the optimiser and every sum in fp32 (docs/precision.md). Every op accepts
// bf16 inputs: those with bf16 kernels run them; the others run on f32 copies and round
// their outputs (engine/ops/op_util.h). Process-wide, config key `activations`.
void set_activation_dtype(DType d);
DType activation_dtype();

// ---- elementwise (engine/ops/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);          // same shapes
Tensor mul(const Tensor& a, const Tensor& b);          // same shapes
Tensor scale(const Tensor& x, double s);               // s * x
// x (N, ..., C) + v with v (C) broadcast over all other axes, or v (N, C) broadcast over the
// axes between the first and the last (a per-sample vector, e.g. a time embedding).
Tensor broadcast_add(const Tensor& x, const Tensor& v);
Tensor silu(const Tensor& x);                          // x * sigmoid(x)
Tensor clamp(const Tensor& x, double lo, double hi);   // min(max(x, lo), hi)
// out[n] = a[n] x[n] + b[n] y[n] with a, b (N) per-sample coefficients (constants: they
// may not require grad) and x, y (N, ...). Gradients flow to x and y.
Tensor per_sample_axpby(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& y);
// dst += alpha * src, outside the tape (gradient accumulation, optimiser helpers).
void accumulate(const Tensor& dst, const Tensor& src, double alpha = 1.0);
// x *= s in place, outside the tape: scale()'s bits without a second buffer (gradient
// clipping and averaging rescale the whole flat gradient).
void scale_in_place(const Tensor& x, double s);

// ---- linear (engine/ops/linear.cpp) ----
// x (..., K), w (K, N), b (N) or undefined -> (..., N)
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- conv2d (engine/ops/conv2d.cpp) ----
struct Conv2dParams {
  int stride = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  // 'same' padding for an odd kernel at stride 1: k/2 on every side.
  static Conv2dParams same(int k) { return {1, k / 2, k / 2, k / 2, k / 2}; }
  // TensorFlow 'SAME' for a 3x3 stride-2 conv on an even map: 0 before, 1 after (the DDPM
  // reference downsampler).
  static Conv2dParams downsample() { return {2, 0, 0, 1, 1}; }
};
// The kernels' description of a convolution of x (N, H, W, Cin) with w (KH, KW, Cin, Cout).
Conv2dShape conv2d_shape(const Shape& x, const Shape& w, const Conv2dParams& p);
// x (N, H, W, Cin), w (KH, KW, Cin, Cout), b (Cout) or undefined -> (N, OH, OW, Cout)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p);
// conv2d(x, w, b, p) + v[n] (broadcast over each sample's pixels) + r: the time-embedding
// and residual adds of a ResBlock, fused into the convolution's epilogue on CUDA v4 (one
// store instead of three passes); separate passes elsewhere, in that order. v (N, Cout) and
// r (N, OH, OW, Cout) may each be undefined.
Tensor conv2d_add(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                  const Tensor& v, const Tensor& r);
// Which CUDA convolution kernel runs (kernels/cuda/conv2d.cu): the naive v1, the tiled
// implicit GEMM v2 in fp32 (default), v3 on TF32 tensor cores (sm_80+; operands rounded
// to 10-bit mantissas, as cuDNN does for fp32 by default), or v4 on bf16 tensor cores
// (kernels/cuda/conv2d_bf16.cu; sm_80+; operands rounded to bf16, fp32 accumulation, as
// under PyTorch's autocast). Or cuDNN (kernels/cuda/conv2d_cudnn.cu), the library baseline,
// in the math the precision says: fp32 with FMA math, TF32 tensor cores under TF32, bf16
// tensors under BF16 (its outputs then rounded to bf16 too). Or Auto: per shape and pass,
// the fastest of our kernels of the precision's math (v2 and v4 on bf16x6 pieces / v4 in TF32
// / v4) and cuDNN's, timed once on first use and printed (kernels/cuda/conv2d_autotune.cuh).
// Under TF32 the default is v4 in TF32 (kernels/cuda/conv2d_tf32.cu: v3's numbers on v4's
// GEMM, TF32 mma.sync or bf16 pieces by pass); TensorCore keeps v3. Or Bf16x6: fp32 on v4's bf16 GEMM, each operand
// three bf16 pieces and six of their products (kernels/cuda/conv2d_pieces.cu; each product
// within 2^-23 of itself; under TF32 and BF16 the precision's v4). Or Wgmma: the bf16 products
// of v4 on Hopper's wgmma, convolution v5 (conv2d_bf16.cuh; an H100 / H200 and a build for
// architecture 90, else refused: conv_algorithm_unavailable). The CPU path has one reference.
enum class ConvAlgorithm { Naive, Tiled, TensorCore, Bf16TensorCore, Bf16x6, Wgmma, Cudnn, Auto };
void set_conv_algorithm(ConvAlgorithm algo);
ConvAlgorithm conv_algorithm();
// Why `algo` cannot run on this machine's GPU (v5 without an sm_90 GPU or sm_90a code), or
// "" when it can: checked before a run starts, not at its first convolution.
std::string conv_algorithm_unavailable(ConvAlgorithm algo);
// v4's block shape per pass and size: by a heuristic (default), or timed on first use
// (autotune, like torch.backends.cudnn.benchmark; prints its choices). Either way the same
// bits. Under Wgmma, v5's schedule the same way: its 4-stage ring (the default), with B by
// the copy engine, in 3 stages two blocks an SM, or on 256x128 tiles; the same bits too.
// And under Cudnn and Auto, cuDNN's algorithm per shape and pass: the fastest of its
// deterministic ones, timed (kernels/cuda/conv2d_cudnn_plan.cuh), where it is otherwise its
// heuristics' first; not the same bits, each within its rounding. Config key cuda_autotune.
void set_conv_autotune(bool on);

// ---- group norm (engine/ops/group_norm.cpp) ----
// x (N, ..., C) normalised over each sample's groups of C/groups channels; gamma, beta (C).
Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                  double eps = 1e-6);
// silu(group_norm(x)) in one pass (the normalised values are never stored); equal to the
// two ops up to rounding.
Tensor group_norm_silu(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                       double eps = 1e-6);
// dropout(group_norm_silu(x), p, seed, stream) bit for bit, in the same passes on CUDA (the
// mask drawn as the output is written and regenerated as the gradient is read: the
// dropped activation is written once and read once less).
Tensor group_norm_silu_dropout(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                               int64_t groups, double p, uint64_t seed, StepKey stream,
                               double eps = 1e-6);

// ---- data movement (engine/ops/resample.cpp) ----
Tensor upsample_nearest2x(const Tensor& x);            // (N, H, W, C) -> (N, 2H, 2W, C)
Tensor concat(const std::vector<Tensor>& xs);          // along the last (channel) axis
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes);  // last axis
Tensor reshape(const Tensor& x, const Shape& shape);   // a view, recorded for autograd

// ---- upsample + convolution (engine/ops/upsample_conv.cpp) ----
// conv2d(upsample_nearest2x(x), w, b, Conv2dParams::same(3)) for a 3x3 w (the U-Net's
// upsampler), computed by output phase (kernels/upsample_conv.h): four 2x2 convolutions of x
// itself with folded kernels, interleaved. 4/9 of the multiply-adds, and the 4x larger
// upsampled map is never written. Equal to the two ops up to the order of the sums; under a
// rounding precision the folded kernels are what is rounded (from their fp32 sums, computed
// in the same order on every device). Counted in engine/flops.h as the convolution of the
// upsampled map (the model's FLOPs, whatever the algorithm). x (N, H, W, Cin), w (3, 3, Cin,
// Cout), b (Cout) or undefined -> (N, 2H, 2W, Cout).
Tensor upsample_conv3x3(const Tensor& x, const Tensor& w, const Tensor& b);
// Its pieces, recorded ops of their own: w (3, 3, Cin, Cout) -> the four phases' folded
// kernels (2, 2, Cin, Cout), phase p = 2a + b (a, b: the output's row and column parity);
// and the four phases' outputs (N, H, W, C) -> the map (N, 2H, 2W, C) they interleave into.
std::vector<Tensor> fold_upsample_weights(const Tensor& w);
Tensor interleave_phases(const std::vector<Tensor>& ys);

// ---- attention (engine/ops/attention.cpp) ----
// Multi-head self-attention: qkv (B, L, 3C) packed [q | k | v] -> (B, L, C); C % heads == 0.
Tensor attention(const Tensor& qkv, int64_t heads);
// Which CUDA attention runs in fp32 math (precisions fp32 and tf32; kernels/cuda/attention*.cu):
// the straightforward one (scores, softmax, value product over an L x L workspace), the fused
// online-softmax one, the same steps as the straightforward one on cuBLAS's SGEMMs
// (attention_gemm.cu: P kept for the backward while the L x L matrices are at most twice
// the size of qkv, L <= 6 head dim, else recomputed by chunks of samples), or Auto
// (default): the engine's pick, today the GEMMs at every shape. Under bf16 products the
// bf16 kernels run whatever this says.
enum class AttentionAlgorithm { Straightforward, Fused, Gemm, Auto };
void set_attention_algorithm(AttentionAlgorithm algo);
AttentionAlgorithm attention_algorithm();
// On bf16 activations on the GPU: the flash pair (dq in its kernel or by cuBLAS's GEMM) or
// cuBLAS's GEMMs with the L x L matrices in memory, by a rule (default), or each shape's
// fastest, timed on its first use with a forward and a backward and printed
// (kernels/cuda/attention_autotune.cuh). Config key cuda_autotune, with the convolutions'.
void set_attention_autotune(bool on);
// Whether that timing also takes the paths no GPU has run yet (the flash pair on wgmma): a
// wrong result is caught and left out, but a trap would end the run. Off by default; config
// key cuda_autotune_unverified.
void set_attention_autotune_unverified(bool on);

// ---- reductions and loss (engine/ops/reduce.cpp) ----
Tensor sum(const Tensor& x);                           // -> scalar
Tensor mean(const Tensor& x);                          // -> scalar
Tensor mse(const Tensor& pred, const Tensor& target);  // mean squared error -> scalar
// (N, ...) x 2 -> (N): each sample's mean squared error
Tensor mse_per_sample(const Tensor& pred, const Tensor& target);

// ---- generated values (engine/ops/random.cpp) ----
// Standard normals / uniforms in [0,1) from Philox: element i is a pure function of
// (seed, stream, i), identical on CPU and CUDA. f32. randn's stream may be read from device
// memory on a GPU (a captured sampling step's: kernels/step_inputs.h).
Tensor randn(const Shape& shape, uint64_t seed, StepKey stream, Device device = Device::CPU);
Tensor rand_uniform(const Shape& shape, uint64_t seed, uint64_t stream,
                    Device device = Device::CPU);
// Inverted dropout with a mask regenerated from (seed, stream); p in [0, 1).
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t stream);
// t (N) timesteps (f32 or f64) -> (N, dim) sinusoidal embedding; no gradient.
Tensor timestep_embedding(const Tensor& t, int64_t dim);

// ---- the fused diffusion loss (engine/ops/diffusion_loss.cpp) ----
// What a fused corruption / loss needs besides the batch: the per-timestep tables (T),
// f32 or f64 like the prediction, on the batch's device; the Philox position of eps (element
// i of the batch = randn's element i at (noise_seed, noise_stream)); for a uint8 x0, the
// random flip (sample j mirrored when philox_uniform(flip_seed, flip_stream, flip_first + j)
// < 0.5, the image batcher's rule).
struct DiffusionLossSpec {
  DiffusionTarget target = DiffusionTarget::Epsilon;
  Tensor sqrt_abar, sqrt_one_minus_abar, weight;  // (T)
  uint64_t noise_seed = 0;
  StepKey noise_stream;  // a number, or read from a GPU step's StepInputs (kernels/step_inputs.h)
  bool flip = false;
  uint64_t flip_seed = 0, flip_stream = 0;
  StepKey flip_first;
};
// Timesteps as the (N) i32 tensor the ops take, each checked to be in [0, T).
Tensor timestep_tensor(const std::vector<int>& t, int64_t T, Device device);
// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps drawn in the kernel and not stored.
// x0 (N, ...) f32/f64, or (N, H, W, C) u8 decoded as u / 127.5 - 1 (then the result is the
// tables' dtype); t (N) i32 on x0's device. Not recorded (x0 is data).
Tensor diffusion_corrupt(const Tensor& x0, const Tensor& t, const DiffusionLossSpec& spec);
struct FusedDiffusionLoss {
  Tensor loss;        // scalar: sum_j w_t importance_j / N * mse_j
  Tensor per_sample;  // (N): w_t * mse_j
  Tensor dpred;       // d loss / d pred, same shape as pred
};
// The loss of pred against the target (eps | x0 | v) and its gradient in one pass; eps is
// regenerated, not read. importance (N) or undefined for 1. Not recorded: hand dpred to
// backward(pred, dpred) (the tape then adopts it as pred's gradient, no copy).
FusedDiffusionLoss diffusion_loss_fused(const Tensor& pred, const Tensor& x0, const Tensor& t,
                                        const Tensor& importance, const DiffusionLossSpec& spec);

}  // namespace ddpm
