// The engine's conv2d_add op on the GPU against the same op on the CPU, forward and every
// gradient through the tape, with a per-element bound proportional to the magnitude of the
// sums: |gpu - cpu| <= relative * mag + 1e-6, where mag (sum |ab| over each output's or
// gradient's products) is the same op run on the CPU on |x|, |w|, ..., |r|. A bound relative
// to the output's rms would fail honest outputs that are sums of a few terms and cancel (a
// 3-channel stride-2 dgrad: ~7 products). Each caller derives `relative` from what its
// kernels do to the numbers. Call with the algorithm and precision set; needs a device.
// activations = BF16: x and r (and so y and their gradients) stored in bf16 on both devices.
// expect_op_within is the same comparison for any op (upsample_conv3x3's, for one).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/conv_cases.h"
#include "tests/test_util.h"

namespace ddpm::test {

inline std::string describe(const ConvCase& c) {
  return c.x.str() + " k" + std::to_string(c.k) + " -> " + std::to_string(c.c_out) + " stride " +
         std::to_string(c.p.stride);
}

// An op of `cpu_in` (f32 CPU tensors, each copied to the device and marked requires_grad;
// those at `activation_inputs` cast to `activations` first) on the GPU against the CPU,
// forward and the gradient of every input, within relative * mag + 1e-6 per element, mag
// the CPU's run on the inputs' absolute values.
using OpOfInputs = std::function<Tensor(const std::vector<Tensor>&)>;
// One comparison: with `earlier`, of sum(op * r) + earlier_gradient_terms(inputs), whose
// backward runs first, so the op's backward adds to gradients already there
// (GradWrite::Accumulate) instead of writing the first ones.
inline void expect_op_within_once(double relative, const std::vector<Tensor>& cpu_in,
                                  const std::vector<size_t>& activation_inputs,
                                  const OpOfInputs& op, const char* gpu_name, DType activations,
                                  bool earlier) {
  const auto absolute = [](const Tensor& t) {
    std::vector<float> v = t.to_vector<float>();
    for (float& e : v) e = std::fabs(e);
    return Tensor::from_vector(t.shape(), v);
  };
  // runs: the CPU, the GPU, and the CPU on absolute values (the magnitudes)
  std::vector<std::vector<std::vector<float>>> runs;  // [run][0: y, 1..: gradients]
  for (int run = 0; run < 3; ++run) {
    const Device d = run == 1 ? Device::CUDA : Device::CPU;
    std::vector<Tensor> in;
    for (size_t i = 0; i < cpu_in.size(); ++i) {
      Tensor copy = (run == 2 ? absolute(cpu_in[i]) : cpu_in[i].clone()).to(d);
      if (std::find(activation_inputs.begin(), activation_inputs.end(), i) !=
          activation_inputs.end())
        copy = cast(copy, activations);
      copy.set_requires_grad(true);
      in.push_back(copy);
    }
    const Tensor y = op(in);
    Tensor r = random_tensor(y.shape(), 999, DType::F32);
    r = (run == 2 ? absolute(r) : r).to(d);
    const Tensor loss = sum(mul(y, r));
    // (the magnitudes' run: the op's products only)
    backward(earlier && run != 2 ? add(loss, earlier_gradient_terms(in, DType::F32)) : loss);
    EXPECT_EQ(y.dtype(), activations);
    runs.push_back({cast(y, DType::F32).to(Device::CPU).to_vector<float>()});
    for (const Tensor& t : in)
      runs.back().push_back(cast(t.grad(), DType::F32).to(Device::CPU).to_vector<float>());
  }
  for (size_t k = 0; k < runs[0].size(); ++k) {
    const std::string what = k == 0 ? "output" : "gradient of input " + std::to_string(k - 1);
    const std::vector<float>&cpu = runs[0][k], &gpu = runs[1][k], &mag = runs[2][k];
    // added to an earlier gradient, a bf16 input's sum is rounded once more on each side
    const bool bf16_sum = earlier && activations == DType::BF16 && k > 0 &&
                          std::find(activation_inputs.begin(), activation_inputs.end(), k - 1) !=
                              activation_inputs.end();
    const double sum_rounding = bf16_sum ? std::ldexp(1.0, -7) : 0.0;
    ASSERT_EQ(gpu.size(), cpu.size()) << what;
    int reported = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      ASSERT_TRUE(std::isfinite(gpu[i])) << what << " element " << i;
      const double bound = relative * mag[i] + sum_rounding * std::fabs(cpu[i]) + 1e-6;
      if (std::fabs(double(gpu[i]) - cpu[i]) > bound && reported++ < 5)
        ADD_FAILURE() << what << " element " << i << ": " << gpu_name << " " << gpu[i]
                      << " vs cpu " << cpu[i] << " (bound " << bound << ")";
    }
  }
}

inline void expect_op_within(double relative, const std::vector<Tensor>& cpu_in,
                             const std::vector<size_t>& activation_inputs, const OpOfInputs& op,
                             const char* gpu_name, DType activations) {
  for (const bool earlier : {false, true}) {
    SCOPED_TRACE(earlier ? "added to an earlier gradient" : "the first gradient");
    expect_op_within_once(relative, cpu_in, activation_inputs, op, gpu_name, activations,
                          earlier);
  }
}

inline void expect_conv_op_within(double relative, const std::vector<ConvCase>& cases,
                                  uint64_t stream, const char* gpu_name,
                                  DType activations = DType::F32) {
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const Conv2dParams p = c.p;
    const double wscale = 1.0 / std::sqrt(double(c.k * c.k * c.x[3]));
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, p);
    const std::vector<Tensor> cpu_in = {
        random_tensor(c.x, stream, DType::F32),
        random_tensor({c.k, c.k, c.x[3], c.c_out}, stream + 1, DType::F32, wscale),
        random_tensor({c.c_out}, stream + 2, DType::F32),
        random_tensor({s.n, s.c_out}, stream + 3, DType::F32),
        random_tensor({s.n, s.out_h(), s.out_w(), s.c_out}, stream + 4, DType::F32)};
    stream += 5;
    expect_op_within(relative, cpu_in, {0, 4}, [p](const std::vector<Tensor>& in) {
      return conv2d_add(in[0], in[1], in[2], p, in[3], in[4]);
    }, gpu_name, activations);  // x and r: activations
  }
}

}  // namespace ddpm::test
