// Shape structs shared by the CPU reference kernels (kernels/cpu) and the CUDA kernels
// (kernels/cuda): one struct per op family, plain integers only, so a kernel's signature
// reads the same on both paths (less the stream). Layouts are given beside each field.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"
#include "kernels/step_inputs.h"

namespace ddpm {

// y (N, S, C) = x (N, S, C) + v, with v (C) broadcast over N and S (per_sample = false),
// or v (N, C) broadcast over S (per_sample = true: e.g. a time embedding per image).
struct BroadcastShape {
  int64_t n = 0, s = 0, c = 0;
  bool per_sample = false;
};

// y (M, N) = x (M, K) w (K, N) + b (N)
struct LinearShape {
  int64_t m = 0, k = 0, n = 0;
};

// y (N, OH, OW, Cout) = conv(x (N, H, W, Cin), w (KH, KW, Cin, Cout)) + b (Cout).
// Padding is per side: TensorFlow 'SAME' for a stride-2 3x3 on an even map pads 0 before and
// 1 after, which the DDPM reference downsampler uses.
struct Conv2dShape {
  int64_t n = 0, h = 0, w = 0, c_in = 0, c_out = 0;
  int kh = 3, kw = 3, stride = 1;
  int pad_top = 1, pad_left = 1, pad_bottom = 1, pad_right = 1;
  DDPM_HD int64_t out_h() const { return (h + pad_top + pad_bottom - kh) / stride + 1; }
  DDPM_HD int64_t out_w() const { return (w + pad_left + pad_right - kw) / stride + 1; }
  DDPM_HD int64_t taps() const { return static_cast<int64_t>(kh) * kw; }
};

// Group norm over x (N, S, C), S = H*W, C split into `groups` groups of C/groups channels.
// Statistics mean, rstd are (N, groups); gamma, beta are (C).
struct GroupNormShape {
  int64_t n = 0, s = 0, c = 0;
  int64_t groups = 32;
  float eps = 1e-6f;
  DDPM_HD int64_t channels_per_group() const { return c / groups; }
};

// Nearest-neighbour 2x: x (N, H, W, C) -> y (N, 2H, 2W, C).
struct UpsampleShape {
  int64_t n = 0, h = 0, w = 0, c = 0;
};

// A (rows, cols) block copied between two row-major matrices with row strides src_ld and
// dst_ld: the core of channel concat and split on NHWC tensors.
struct SliceShape {
  int64_t rows = 0, cols = 0, src_ld = 0, dst_ld = 0;
};

// Self-attention over tokens: qkv (B, L, 3C) packed [q | k | v], each C split into `heads`
// heads of C/heads channels; out (B, L, C); lse (B, heads, L) the log-sum-exp of each
// scaled score row, saved for the backward pass.
// bf16_probs (Precision::BF16, f32 only): the probabilities P and their gradient dS are
// rounded to bf16 where they multiply (P v, P^T dout, dS k, dS^T q), as the tensor-core
// kernels do; q, k, v and dout are rounded by the caller.
struct AttentionShape {
  int64_t b = 0, l = 0, c = 0;
  int64_t heads = 1;
  bool bf16_probs = false;
  DDPM_HD int64_t head_dim() const { return c / heads; }
};

// One AdamW step over a flat buffer (kernels/cpu/optim.h has the update rule).
struct AdamWParams {
  float lr = 2e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  // 1 - beta, rounded from the double (as PyTorch passes 1 - beta2 to addcmul_): 1.0f - beta
  // in float is 0 for a beta2 of 0.999999999, whose float is 1, and v would never grow.
  float one_minus_beta1 = 0.1f, one_minus_beta2 = 0.001f;
  float bias_correction1 = 1.0f, bias_correction2 = 1.0f;  // 1 - beta^t for the step t
};

// The verdict on one training step's gradient (kernels/optim_math.h step_gate), computed on
// the device that holds the gradient so the host need not read the norm back before the
// update: the loss, the gradient's global L2 norm, the factor clipping multiplies every
// gradient by (1 when the norm is within bounds), whether the step is applied at all
// (1: loss and norm finite; 0: AdamW and the EMA leave every buffer as it was), and AdamW's
// bias corrections 1 - beta^t for t = the number of steps applied so far, this one included
// (so the update never waits for the host to learn whether the step before was applied).
// Doubles throughout, so it travels to the host in the same copy as the per-sample losses.
struct StepGate {
  double loss = 0, grad_norm = 0, clip_scale = 1, applied = 1;
  double bias_correction1 = 1, bias_correction2 = 1;
};
constexpr int kStepGateDoubles = 6;
static_assert(sizeof(StepGate) == kStepGateDoubles * sizeof(double), "StepGate is 6 doubles");

// What the gates of successive steps carry from one to the next, in device memory beside
// AdamW's moments: the steps applied, beta1^t and beta2^t for that count t (kept by
// multiplying, once per applied step, on host and device alike: the same bits), and whether
// a refused step has halted training (then every later gate refuses, so a step queued
// behind the refused one cannot change anything before the host hears of it).
struct StepCounters {
  double steps = 0, beta1_power = 1, beta2_power = 1, halted = 0;
};
constexpr int kStepCounterDoubles = 4;
static_assert(sizeof(StepCounters) == kStepCounterDoubles * sizeof(double),
              "StepCounters is 4 doubles");

// The fused diffusion loss (kernels/diffusion_loss_math.h has the per-element formulas).
// A batch of n samples of dim elements each, NHWC images (h, w, c) when x0 is bytes with a
// random flip (for f32 x0 only n and dim matter). eps element i of the batch (i over n * dim)
// is philox_normal(noise_seed, noise_stream, i), the engine's randn at the same position;
// sample j is mirrored left-right when philox_uniform(flip_seed, flip_stream, flip_first + j)
// < 0.5, the image batcher's rule. The two per-step keys may live in device memory
// (kernels/step_inputs.h): the kernels read them once (read_step_keys) before anything else.
enum class DiffusionTarget : int { Epsilon = 0, X0 = 1, V = 2 };
struct DiffusionLossShape {
  int64_t n = 0, dim = 0;
  int64_t h = 0, w = 0, c = 0;  // image geometry, used by the flip only
  DiffusionTarget target = DiffusionTarget::Epsilon;
  uint64_t noise_seed = 0;
  StepKey noise_stream;
  bool flip = false;
  uint64_t flip_seed = 0, flip_stream = 0;
  StepKey flip_first;
};
// s with its per-step keys read, so the rest of a kernel uses plain numbers.
DDPM_HD DiffusionLossShape read_step_keys(DiffusionLossShape s) {
  s.noise_stream = s.noise_stream.value();
  s.flip_first = s.flip_first.value();
  return s;
}

// Per-timestep tables (T entries) and per-sample inputs of the fused loss, all on the
// kernel's device. t[j] indexes the tables; importance is null for weight 1.
template <class T>
struct DiffusionLossTables {
  const int32_t* t = nullptr;           // (n)
  const T* sqrt_abar = nullptr;         // (T) sqrt(alpha_bar_t)
  const T* sqrt_one_minus_abar = nullptr;  // (T) sqrt(1 - alpha_bar_t)
  const T* weight = nullptr;            // (T) loss weight w_t (simple 1, vlb, hybrid)
  const T* importance = nullptr;        // (n) importance-sampling weight, or null
};

}  // namespace ddpm
