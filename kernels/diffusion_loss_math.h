// Per-element formulas of the fused diffusion loss, shared by the CPU reference
// (kernels/cpu/diffusion_loss.cpp) and the CUDA kernels (kernels/cuda/diffusion_loss.cu), so
// that both paths compute the same expression with the same roundings:
//
//   x0     = the f32 value, or byte / 127.5 - 1 read from the mirrored column when flipped
//   eps    = philox_normal(noise_seed, noise_stream, j * dim + i)      (never stored)
//   x_t    = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
//   target = eps | x0 | sqrt(abar_t) eps - sqrt(1 - abar_t) x0   (epsilon | x0 | v)
//
// The products and sums go through mul_rn / add_rn (kernels/rounding.h), correctly rounded
// single operations on both sides: the CPU and the GPU produce the same bits for x_t and the
// target, and the same bits as the unfused chain's per_sample_axpby, which uses them too.
#pragma once

#include <cstdint>

#include "engine/philox.h"
#include "kernels/rounding.h"
#include "kernels/shapes.h"

namespace ddpm::diffusion {

// Pixel byte to [-1, 1] exactly as the image batcher does it: b / 127.5f - 1.
DDPM_HD float byte_to_unit(uint8_t b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__fdiv_rn(static_cast<float>(b), 127.5f), 1.0f);
#else
  return static_cast<float>(b) / 127.5f - 1.0f;
#endif
}

// Whether sample j of the batch is mirrored left-right (s has its keys read: read_step_keys).
DDPM_HD bool mirrored(const DiffusionLossShape& s, int64_t j) {
  return s.flip &&
         philox_uniform(s.flip_seed, s.flip_stream, s.flip_first.base + static_cast<uint64_t>(j)) <
             0.5f;
}

// Element i of sample j's x0, from an f32/f64 batch...
template <class T>
DDPM_HD T x0_value(const DiffusionLossShape& s, const T* x0, int64_t j, int64_t i, bool) {
  return x0[j * s.dim + i];
}
// ... or from the raw bytes (NHWC), reading column w - 1 - x when the sample is mirrored.
template <class T>
DDPM_HD T x0_value(const DiffusionLossShape& s, const uint8_t* x0, int64_t j, int64_t i,
                   bool mirror) {
  int64_t src = i;
  if (mirror) {  // 32-bit index arithmetic: one image is far below 2^32 bytes
    const uint32_t ii = static_cast<uint32_t>(i), c = static_cast<uint32_t>(s.c);
    const uint32_t row = static_cast<uint32_t>(s.w) * c, y = ii / row, x = (ii % row) / c;
    src = static_cast<int64_t>(y * row + (static_cast<uint32_t>(s.w) - 1 - x) * c + ii % c);
  }
  return static_cast<T>(byte_to_unit(x0[j * s.dim + src]));
}

template <class T>
DDPM_HD T corrupt_value(T sqrt_abar, T sqrt_one_minus_abar, T x0, T eps) {
  return add_rn(mul_rn(sqrt_abar, x0), mul_rn(sqrt_one_minus_abar, eps));
}

template <class T>
DDPM_HD T target_value(DiffusionTarget target, T sqrt_abar, T sqrt_one_minus_abar, T x0, T eps) {
  switch (target) {
    case DiffusionTarget::Epsilon: return eps;
    case DiffusionTarget::X0: return x0;
    default: return add_rn(mul_rn(sqrt_abar, eps), mul_rn(-sqrt_one_minus_abar, x0));
  }
}

// d(loss)/d(pred) = grad_scale * (pred - target) for a sample whose loss weight in the batch
// mean is batch_weight = w_t * importance / n:  grad_scale = 2 * batch_weight / dim.
template <class T>
DDPM_HD T grad_scale(T batch_weight, int64_t dim) {
  return T(2) * batch_weight / static_cast<T>(dim);
}

}  // namespace ddpm::diffusion
