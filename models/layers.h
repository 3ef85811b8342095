// Layers with parameters, on the engine's ops: each binds its weights in a ParameterStore at
// construction and applies them in operator(). Initialisation follows the DDPM reference
// (variance_scaling(scale, 'fan_avg', 'uniform')): weights ~ U(-b, b), b = sqrt(3 scale /
// fan_avg), fan_avg = (fan_in + fan_out) / 2 with the kernel area counted in both fans;
// biases zero. scale = 0 means an exactly zero weight (the reference uses 1e-10; exact zero
// gives the same function and makes "zero-initialised" testable).
#pragma once

#include <string>

#include "engine/ops.h"
#include "engine/parameters.h"

namespace ddpm {

// The DDPM reference's uniform fan_avg initialisation.
Init fan_avg_uniform(int64_t fan_in, int64_t fan_out, double scale);

// y = x w + b, w (in, out).
class Linear {
 public:
  Linear() = default;
  Linear(ParameterStore& store, const std::string& name, int64_t in, int64_t out,
         double init_scale = 1.0);
  // With the weight's initialisation given, e.g. the fans of the layers it stands for.
  Linear(ParameterStore& store, const std::string& name, int64_t in, int64_t out, Init weight_init);
  Tensor operator()(const Tensor& x) const { return linear(x, w_, b_); }
  const Tensor& weight() const { return w_; }
  const Tensor& bias() const { return b_; }

 private:
  Tensor w_, b_;
};

// 2-D convolution, NHWC, weight (k, k, in, out).
class Conv2d {
 public:
  Conv2d() = default;
  Conv2d(ParameterStore& store, const std::string& name, int64_t in, int64_t out, int k,
         Conv2dParams params, double init_scale = 1.0);
  Tensor operator()(const Tensor& x) const { return conv2d(x, w_, b_, params_); }
  // + v[n] (N, Cout) broadcast over each sample's pixels + r: conv2d_add (engine/ops.h),
  // the adds fused into the convolution where the kernel can; either may be undefined.
  Tensor operator()(const Tensor& x, const Tensor& v, const Tensor& r) const {
    return conv2d_add(x, w_, b_, params_, v, r);
  }
  // This convolution (3x3, 'same') of upsample_nearest2x(x), computed by output phase
  // without the upsampled map: upsample_conv3x3 (engine/ops.h).
  Tensor of_upsampled(const Tensor& x) const;
  const Tensor& weight() const { return w_; }
  const Tensor& bias() const { return b_; }

 private:
  Tensor w_, b_;
  Conv2dParams params_;
};

// Group norm with its affine parameters (gamma = 1, beta = 0 at init).
class GroupNorm {
 public:
  GroupNorm() = default;
  GroupNorm(ParameterStore& store, const std::string& name, int64_t channels, int64_t groups,
            double eps = 1e-6);
  Tensor operator()(const Tensor& x) const { return group_norm(x, gamma_, beta_, groups_, eps_); }
  // silu(norm(x)), fused.
  Tensor silu(const Tensor& x) const { return group_norm_silu(x, gamma_, beta_, groups_, eps_); }
  // dropout(silu(norm(x))), fused.
  Tensor silu_dropout(const Tensor& x, double p, uint64_t seed, StepKey stream) const {
    return group_norm_silu_dropout(x, gamma_, beta_, groups_, p, seed, stream, eps_);
  }

 private:
  Tensor gamma_, beta_;
  int64_t groups_ = 32;
  double eps_ = 1e-6;
};

}  // namespace ddpm
