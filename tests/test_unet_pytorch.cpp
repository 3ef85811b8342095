// The engine's U-Net against PyTorch's: scripts/pytorch_reference.py's model, the one every
// "engine vs PyTorch" figure of this project times, evaluated by PyTorch in float64 on random
// weights (tests/data/pytorch_unet_small.safetensors, written by
// scripts/pytorch_unet_match.py). The engine, in fp32 with the same weights, must give the
// same output and the same gradient for x_t and every parameter. test_unet_wiring.cpp holds
// the forward to the DDPM paper's structure written in the engine's own ops; this holds the
// forward and the backward to an implementation outside the engine (PyTorch's convolution,
// group norm, attention and autograd), and so the PyTorch baseline to the same function as
// the model it is timed against, not only the same parameter count. In fp32 on the CPU's
// reference and fast kernels, both ways of upsampling, and in bf16 (products and
// activations); and the CUDA path in both, on a GPU or the CPU emulation.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "engine/device.h"
#include "engine/safetensors.h"
#include "models/unet/unet.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

const char* const kFile = DDPM_SOURCE_DIR "/tests/data/pytorch_unet_small.safetensors";

UNetConfig config_of(const SafetensorsFile& f, bool by_phase) {
  const auto config = f.metadata.find("config");
  if (config == f.metadata.end())
    throw std::runtime_error(std::string(kFile) + " has no \"config\" metadata");
  const nlohmann::json j = nlohmann::json::parse(config->second);
  UNetConfig c;
  c.image_size = j.at("image_size");
  c.in_channels = j.at("in_channels");
  c.base_channels = j.at("base_channels");
  c.channel_mult = j.at("channel_mult").get<std::vector<int64_t>>();
  c.num_res_blocks = j.at("num_res_blocks");
  c.attention_resolutions = j.at("attention_resolutions").get<std::vector<int64_t>>();
  c.attention_heads = j.at("attention_heads");
  c.dropout = j.at("dropout");
  c.groups = j.at("groups");
  c.upsample_by_phase = by_phase;
  return c;
}

const Tensor& entry(const SafetensorsFile& f, const std::string& name) {
  const auto it = f.tensors.find(name);
  if (it == f.tensors.end()) throw std::runtime_error(std::string(kFile) + " has no " + name);
  return it->second;
}

// max |got - want| <= tol * max |want| over one tensor: the engine's fp32 error, PyTorch's
// float64 values being exact to their rounding to fp32. Each value is a chain of about 30
// layers (forward and back), each a sum of at most 9 x 32 = 288 products (the widest
// convolution's) or 128 pixels (a weight gradient's) rounded to fp32 (u = 2^-24 = 6e-8).
// Such a sum's rounding error typically grows like sqrt(K) u ~ 1e-6 of the sum of its
// terms' magnitudes: ~3e-5 over 30 layers were every layer's error to add in one direction.
// And a gradient summed over the batch's pixels (the biases', the time projections') may
// cancel to a value smaller than its terms, which the bound on max |want| does not see.
// Measured worst: 4.7e-6 to 5.5e-6 on the CPU's kernels, 7.2e-6 on the emulated GPU (the
// time projection's weight gradient, such a sum). 5e-5 is 7 times the largest; a wrong
// wiring (a missing residual, SiLU or normalisation, an operand order, the norm's eps at
// 1e-3) moves values by 1e-3 to 1 of their scale (tests/mutations/unet_wiring.json, all
// caught here).
constexpr double kTol = 5e-5;

double relative_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = test::values(got), w = test::values(want);
  EXPECT_EQ(g.size(), w.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < std::min(g.size(), w.size()); ++i) {
    err = std::max(err, std::fabs(g[i] - w[i]));
    scale = std::max(scale, std::fabs(w[i]));
  }
  EXPECT_GT(scale, 0.0) << "PyTorch's values are all zero: the comparison proves nothing";
  return scale > 0 ? err / scale : err;
}

// The engine's U-Net on `device` with the file's weights, input and loss; every tensor's
// error against PyTorch's within `tol`. Prints the worst.
void expect_pytorchs_values(Device device, bool by_phase, double tol = kTol) {
  const SafetensorsFile f = read_safetensors(kFile);
  ParameterStore store;
  const UNet net(store, config_of(f, by_phase));
  store.finalize(device, DType::F32, 0);
  // every engine parameter from the file, and the file has no parameter the engine lacks
  int64_t in_file = 0;
  for (const auto& [name, t] : f.tensors) {
    if (name.rfind("model.", 0) != 0) continue;
    ++in_file;
    const Tensor p = store.find(name.substr(6));
    ASSERT_EQ(p.shape(), t.shape()) << name;
    p.copy_from(t);
  }
  ASSERT_EQ(in_file, static_cast<int64_t>(store.parameters().size()));

  Tensor x = entry(f, "input.x").to(DType::F32).to(device);
  x.set_requires_grad(true);
  std::vector<int> t;
  for (const float v : entry(f, "input.t").to_vector<float>()) t.push_back(static_cast<int>(v));
  const Tensor y = net.forward(x, Timesteps(t), ForwardMode{});
  const double out_err = relative_error(y, entry(f, "expect.out"));
  EXPECT_LE(out_err, tol) << "the output";
  backward(sum(mul(y, entry(f, "input.g").to(DType::F32).to(device))));
  EXPECT_LE(relative_error(x.grad(), entry(f, "expect.grad.x")), tol) << "d loss / d x_t";
  double worst = out_err;
  std::string worst_name = "the output";
  for (const auto& [name, want] : f.tensors) {
    if (name.rfind("expect.grad.", 0) != 0 || name == "expect.grad.x") continue;
    const std::string param = name.substr(12);
    const double err = relative_error(store.find(param).grad(), want);
    EXPECT_LE(err, tol) << "d loss / d " << param;
    if (err > worst) worst = err, worst_name = param;
  }
  std::printf("worst relative error: %.3g (%s)\n", worst, worst_name.c_str());
}

class UNetAgainstPyTorch : public ::testing::TestWithParam<std::tuple<CpuKernels, bool>> {};

TEST_P(UNetAgainstPyTorch, SameOutputAndGradientsOnTheSameWeights) {
  const auto [kernels, by_phase] = GetParam();
  if (kernels == CpuKernels::Fast && !cpu_fast_kernels_built())
    GTEST_SKIP() << "built without oneDNN and OpenBLAS";
  const test::UseCpuKernels use(kernels);
  expect_pytorchs_values(Device::CPU, by_phase);
}

// bf16 products and bf16 activations (the engine's bf16 recipe, docs/precision.md) for the
// scope, fp32 after.
class UseBf16 {
 public:
  UseBf16() {
    set_precision(Precision::BF16);
    set_activation_dtype(DType::BF16);
  }
  ~UseBf16() {
    set_precision(Precision::F32);
    set_activation_dtype(DType::F32);
  }
};

// bf16: every activation and product operand rounded to 8 significant bits (u = 2^-9 = 2e-3)
// on its way through about 30 layers, forward and back: sqrt(30) u ~ 1.1e-2 of the scale if
// the roundings add at random, more in the sums that cancel (as kTol's). Measured worst:
// 0.038 on the CPU (the time projection's weight gradient), 0.028 on the emulated GPU. 0.1
// is that with a margin of 2.6, and still catches a wrong wiring: 9 of unet_wiring.json's
// 10 mutations fail these two tests alone (the tenth, the attention norm's eps at 1e-3,
// moves values by less than bf16 resolves; the fp32 tests catch it).
constexpr double kBf16Tol = 0.1;

TEST(UNetAgainstPyTorch, InBf16) {
  const UseBf16 bf16;
  expect_pytorchs_values(Device::CPU, true, kBf16Tol);
}

TEST(CudaUNetAgainstPyTorch, InBf16) {
  REQUIRE_GPU();
  const UseBf16 bf16;
  expect_pytorchs_values(Device::CUDA, true, kBf16Tol);
}

// The CUDA path in fp32 on its default kernels (and on the CPU emulation in CI), to the same
// bound: its sums run in other orders, with the same fp32 roundings.
TEST(CudaUNetAgainstPyTorch, SameOutputAndGradientsOnTheSameWeights) {
  REQUIRE_GPU();
  expect_pytorchs_values(Device::CUDA, true);
}

INSTANTIATE_TEST_SUITE_P(
    KernelsAndUpsampling, UNetAgainstPyTorch,
    ::testing::Combine(::testing::Values(CpuKernels::Reference, CpuKernels::Fast),
                       ::testing::Values(true, false)),
    [](const ::testing::TestParamInfo<std::tuple<CpuKernels, bool>>& p) {
      return std::string(std::get<0>(p.param) == CpuKernels::Fast ? "Fast" : "Reference") +
             (std::get<1>(p.param) ? "ByPhase" : "UpsampleThenConv");
    });

}  // namespace
}  // namespace ddpm
