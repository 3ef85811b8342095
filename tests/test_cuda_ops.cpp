// Every op with a CUDA kernel, CUDA against the CPU reference: the same f32 inputs on both
// devices, the forward outputs and the gradient of sum(f(x) * r) with respect to every input
// compared element by element. Awkward shapes (odd maps, 65 channels, batch 3) and the
// CIFAR-10 model's group-norm shapes. Sentinels around outputs catch out-of-bounds writes;
// reductions are checked for determinism. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/device.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "tests/gradcheck.h"
#include "tests/conv_cases.h"
#include "kernels/bf16.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/column_sum_plan.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm_lt.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/linear.cuh"
#include "kernels/cuda/resample.cuh"
#include "tests/device_buffer.h"
#include "tests/group_norm_version.h"
#endif
#if DDPM_CUDA_EMULATION
#include "tests/cuda_emulation/cublaslt.h"  // cublaslt_find_no_algorithm, cublaslt_matmuls
#endif

namespace ddpm {
namespace {

using test::ConvCase;
using test::conv_cases;

using test::TensorFn;

struct DeviceRun {
  std::vector<float> out;
  std::vector<std::vector<float>> grads;
};

// The gradient of sum(f(x) * r) with respect to each input. With `earlier`, of
// sum(f(x) * r) + test::earlier_gradient_terms(x): f's backward then adds to a gradient
// already there (GradWrite::Accumulate), where without it f's is the first contribution
// (written outright): both paths of every backward kernel.
DeviceRun run_on(Device d, const TensorFn& f, const std::vector<Tensor>& cpu_inputs,
                 bool earlier = false) {
  std::vector<Tensor> in;
  for (const Tensor& x : cpu_inputs) {
    Tensor copy = x.clone().to(d);
    copy.set_requires_grad(true);
    in.push_back(copy);
  }
  const Tensor y = f(in);
  const Tensor r = test::random_tensor(y.shape(), 999, DType::F32).to(d);
  const Tensor loss = sum(mul(y, r));
  backward(earlier ? add(loss, test::earlier_gradient_terms(in, DType::F32)) : loss);
  DeviceRun run;
  run.out = y.to(Device::CPU).to_vector<float>();
  for (const Tensor& x : in) run.grads.push_back(x.grad().to(Device::CPU).to_vector<float>());
  return run;
}


void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol,
                  double rtol, const std::string& what) {
  test::expect_close(gpu, cpu, atol, rtol, what, "cuda", "cpu");
}

void expect_devices_agree(const TensorFn& f, const std::vector<Tensor>& inputs, double atol,
                          double rtol) {
  for (const bool earlier : {false, true}) {
    SCOPED_TRACE(earlier ? "added to an earlier gradient" : "the first gradient");
    const DeviceRun cpu = run_on(Device::CPU, f, inputs, earlier);
    const DeviceRun gpu = run_on(Device::CUDA, f, inputs, earlier);
    expect_close(gpu.out, cpu.out, atol, rtol, "output");
    for (size_t k = 0; k < inputs.size(); ++k)
      expect_close(gpu.grads[k], cpu.grads[k], atol, rtol,
                   "gradient of input " + std::to_string(k));
  }
}

Tensor rnd(const Shape& s, uint64_t stream, double scale = 1.0) {
  return test::random_tensor(s, stream, DType::F32, scale);
}

// Elementwise ops differ only by expf vs std::exp (a few ulp): tight bounds.
constexpr double kElemAtol = 1e-6, kElemRtol = 1e-5;

TEST(CudaOps, ElementwiseFamily) {
  REQUIRE_GPU();
  const Shape s{3, 5, 7, 65};
  expect_devices_agree([](const std::vector<Tensor>& in) { return add(in[0], in[1]); },
                       {rnd(s, 1), rnd(s, 2)}, kElemAtol, kElemRtol);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); },
                       {rnd(s, 1), rnd(s, 2)}, kElemAtol, kElemRtol);
  expect_devices_agree([](const std::vector<Tensor>& in) { return scale(in[0], -0.3); },
                       {rnd(s, 1)}, kElemAtol, kElemRtol);
  expect_devices_agree([](const std::vector<Tensor>& in) { return silu(in[0]); },
                       {rnd(s, 1, 3.0)}, kElemAtol, kElemRtol);
  // clamp's bounds among the inputs: the gradient there is 0 on both devices (strict bounds)
  std::vector<float> at_bounds = rnd(s, 1).to_vector<float>();
  for (size_t i = 0; i < at_bounds.size(); i += 7) at_bounds[i] = i % 2 ? -0.7f : 0.9f;
  expect_devices_agree([](const std::vector<Tensor>& in) { return clamp(in[0], -0.7, 0.9); },
                       {Tensor::from_vector(s, at_bounds)}, kElemAtol, kElemRtol);
}

#if DDPM_WITH_CUDA
// The bf16 and TF32 roundings of matrix-product operands: the same bits on both devices (one
// integer rounding per element), ties and values that round up to a new binade included.
TEST(CudaOps, OperandRoundingIsTheCpusBitForBit) {
  REQUIRE_GPU();
  std::vector<float> v = rnd({3, 5, 7, 65}, 1, 3.0).to_vector<float>();
  for (float tie : {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.0f + 1.0f / 2048, -1.99999f, 3.4e38f,
                    1e-39f})
    v.push_back(tie);
  const Tensor x = Tensor::from_vector(Shape{static_cast<int64_t>(v.size())}, v);
  const Tensor xg = x.to(Device::CUDA);
  using Rounding = void (*)(int64_t, const float*, float*);
  const struct {
    const char* name;
    Rounding cpu, gpu;
  } roundings[] = {{"bf16", cpu::round_to_bf16, cuda::round_to_bf16},
                   {"tf32", cpu::round_to_tf32, cuda::round_to_tf32}};
  for (const auto& r : roundings) {
    SCOPED_TRACE(r.name);
    std::vector<float> cpu(v.size());
    r.cpu(x.numel(), x.data<float>(), cpu.data());
    const Tensor yg = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
    r.gpu(x.numel(), xg.data<float>(), yg.data<float>());
    EXPECT_EQ(yg.to(Device::CPU).to_vector<float>(), cpu);
    EXPECT_NE(cpu, v);  // it did round
  }
}
#endif

TEST(CudaOps, BroadcastAndPerSample) {
  REQUIRE_GPU();
  // dv sums up to 3*5*7 = 105 values: float vs the CPU's float loop in another order.
  expect_devices_agree([](const std::vector<Tensor>& in) { return broadcast_add(in[0], in[1]); },
                       {rnd({3, 5, 7, 65}, 1), rnd({65}, 2)}, 1e-5, 1e-5);
  expect_devices_agree([](const std::vector<Tensor>& in) { return broadcast_add(in[0], in[1]); },
                       {rnd({3, 5, 7, 65}, 1), rnd({3, 65}, 2)}, 1e-5, 1e-5);
  // 64 channels: the forward adds float4 words (kernels/cuda/elementwise.cu)
  expect_devices_agree([](const std::vector<Tensor>& in) { return broadcast_add(in[0], in[1]); },
                       {rnd({3, 5, 7, 64}, 3), rnd({64}, 4)}, 1e-5, 1e-5);
  expect_devices_agree([](const std::vector<Tensor>& in) { return broadcast_add(in[0], in[1]); },
                       {rnd({3, 5, 7, 64}, 3), rnd({3, 64}, 4)}, 1e-5, 1e-5);
  const Tensor a = Tensor::from_vector<float>(Shape{3}, {0.5f, -1.5f, 2.0f});
  const Tensor b = Tensor::from_vector<float>(Shape{3}, {1.25f, 0.75f, -0.3f});
  expect_devices_agree(
      [&](const std::vector<Tensor>& in) {
        return per_sample_axpby(a.to(in[0].device()), in[0], b.to(in[0].device()), in[1]);
      },
      {rnd({3, 5, 7, 3}, 1), rnd({3, 5, 7, 3}, 2)}, kElemAtol, kElemRtol);
}

TEST(CudaOps, LinearThroughCublas) {
  REQUIRE_GPU();
  // K up to 512 terms per output: float sums in different orders.
  expect_devices_agree([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                       {rnd({19, 7}, 1), rnd({7, 5}, 2), rnd({5}, 3)}, 1e-5, 1e-5);
  expect_devices_agree([](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); },
                       {rnd({3, 5, 7, 65}, 1), rnd({65, 67}, 2, 0.1)}, 1e-5, 1e-5);
  // the time-embedding MLP and (not with small shapes: the same kernels on 600M products,
  // 4/5 of the test's time under the sanitizers) an attention qkv projection of the CIFAR model
  expect_devices_agree([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                       {rnd({128, 512}, 1), rnd({512, 512}, 2, 0.04), rnd({512}, 3)}, 2e-4, 2e-4);
  if (test::small_shapes_only()) return;
  expect_devices_agree([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                       {rnd({4, 256, 256}, 1), rnd({256, 768}, 2, 0.06), rnd({768}, 3)}, 2e-4, 2e-4);
}

// Under Precision::BF16 and TF32 the GPU's linear layers multiply on tensor cores: bf16
// copies of x, w and dy through cublasGemmEx, or TF32-rounded operands through SGEMM in TF32
// math (kernels/cuda/linear.cu). Both are the CPU's fp32 products of rounded operands up to
// the order of the sums (the fp32 bounds above), the bias gradient included (summed from the
// fp32 dy on both); and not the GPU's fp32 products (the operands were rounded). Sizes that
// are not multiples of 8 take cuBLAS's unaligned paths.
TEST(CudaOps, LinearUnderBf16AndTf32MultipliesRoundedOperands) {
  REQUIRE_GPU();
  struct Case {
    std::vector<Tensor> in;
    double tol;
  };
  const auto with_bias = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  const Case cases[] = {{{rnd({19, 7}, 1), rnd({7, 5}, 2), rnd({5}, 3)}, 1e-5},
                        {{rnd({3, 5, 7, 65}, 1), rnd({65, 67}, 2, 0.1), rnd({67}, 3)}, 1e-5},
                        {{rnd({128, 512}, 1), rnd({512, 512}, 2, 0.04), rnd({512}, 3)}, 2e-4}};
  for (const Precision p : {Precision::BF16, Precision::TF32}) {
    SCOPED_TRACE(p == Precision::BF16 ? "bf16" : "tf32");
    for (const Case& c : cases) {
      SCOPED_TRACE(c.in[0].shape().str());
      set_precision(p);
      const DeviceRun cpu = run_on(Device::CPU, with_bias, c.in);
      const DeviceRun gpu = run_on(Device::CUDA, with_bias, c.in);
      set_precision(Precision::F32);
      const DeviceRun fp32 = run_on(Device::CUDA, with_bias, c.in);
      expect_close(gpu.out, cpu.out, c.tol, c.tol, "output");
      for (size_t k = 0; k < c.in.size(); ++k)
        expect_close(gpu.grads[k], cpu.grads[k], c.tol, c.tol, "gradient " + std::to_string(k));
      EXPECT_NE(gpu.out, fp32.out);
      EXPECT_NE(gpu.grads[1], fp32.grads[1]);
    }
  }
}

#if DDPM_WITH_CUDA
// The forward's bias in cuBLASLt's epilogue (kernels/cuda/gemm_lt.cuh), on each of the four
// forward paths: fp32, TF32, bf16 products on fp32 activations, bf16 activations. Each runs
// one pass fewer than with the epilogue switched off (the broadcast add; on bf16
// activations two: the bias widened from its bf16 value, and row_adds' add and rounding),
// and gives what the two passes give: the same bits under the emulation, whose products sum
// one way; on a GPU, where cuBLASLt and cuBLAS may pick algorithms that sum the 24 products
// in different orders, within fp32's rounding of those sums (1e-5 of the value, and as
// much absolute for values near 0), and for a bf16 output the neighbouring bf16 value
// (2^-8 of the value) on top.
TEST(CudaOps, LinearAddsItsBiasInCublasLtsEpilogue) {
  REQUIRE_GPU();
  struct Restore {  // for the tests after this one, whichever assertion stops it
    ~Restore() {
      cuda::lt::set_bias_epilogue(true);
      set_precision(Precision::F32);
    }
  } restore;
  struct Path {
    const char* name;
    Precision precision;
    bool bf16_activations;
    uint64_t passes_saved;
  };
  const Path paths[] = {{"fp32", Precision::F32, false, 1},
                        {"tf32", Precision::TF32, false, 1},
                        {"bf16 products", Precision::BF16, false, 1},
                        {"bf16 activations", Precision::BF16, true, 2}};
  const Tensor x32 = rnd({3, 5, 24}, 1).to(Device::CUDA);
  const Tensor w = rnd({24, 40}, 2, 0.2).to(Device::CUDA), b = rnd({40}, 3).to(Device::CUDA);
  for (const Path& path : paths) {
    SCOPED_TRACE(path.name);
    set_precision(path.precision);
    const Tensor x = path.bf16_activations ? cast(x32, DType::BF16) : x32;
    std::vector<float> out[2];  // the epilogue on, off
    uint64_t launches[2];
    for (int off = 0; off < 2; ++off) {
      cuda::lt::set_bias_epilogue(off == 0);
      const DeviceWorkCounts before = device_work_counts();
      testing::internal::CaptureStdout();
      const Tensor y = linear(x, w, b);
      const std::string printed = testing::internal::GetCapturedStdout();
      launches[off] = (device_work_counts() - before).launches;
      EXPECT_EQ(printed.find("cuBLASLt has no algorithm"), std::string::npos) << printed;
      ASSERT_EQ(y.dtype(), x.dtype());
      out[off] = cast(y, DType::F32).to(Device::CPU).to_vector<float>();
    }
    EXPECT_EQ(launches[1], launches[0] + path.passes_saved);
#if DDPM_CUDA_EMULATION
    EXPECT_EQ(out[0], out[1]);
#else
    const double rounding = path.bf16_activations ? std::ldexp(1.0, -8) : 0.0;
    for (size_t i = 0; i < out[0].size(); ++i)
      ASSERT_NEAR(out[0][i], out[1][i], (1e-5 + rounding) * std::fabs(out[1][i]) + 1e-5)
          << "element " << i;
#endif
  }
}
#endif

#if DDPM_WITH_CUDA
// Without a bias, a linear layer on bf16 activations stores its product in bf16 as cuBLAS
// sums it: one rounding, no pass after it (the one launch is w's conversion: a plain tensor
// has no bf16 copy). The CPU's widened op rounds its own fp32 sums of the same bf16
// products once: within one bf16 rounding of the products' magnitude sum (2^-8, as
// CudaBf16Storage.LinearReadsBf16ActivationsAsTheyAre derives it), plus fp32's of the sums.
TEST(CudaOps, LinearOnBf16ActivationsWithoutABiasRoundsTheProductOnce) {
  REQUIRE_GPU();
  struct Restore {
    ~Restore() { set_precision(Precision::F32); }
  } restore;
  set_precision(Precision::BF16);
  const Tensor x = cast(rnd({3, 5, 24}, 7), DType::BF16), w = rnd({24, 40}, 8, 0.2);
  const Tensor xg = x.to(Device::CUDA), wg = w.to(Device::CUDA);
  const DeviceWorkCounts before = device_work_counts();
  const Tensor yg = linear(xg, wg, Tensor());
  const uint64_t launches = (device_work_counts() - before).launches;
  const std::vector<float> gpu = cast(yg, DType::F32).to(Device::CPU).to_vector<float>();
  const std::vector<float> cpu = cast(linear(x, w, Tensor()), DType::F32).to_vector<float>();
  const auto magnitudes = [](const Tensor& t) {
    std::vector<float> v = cast(t, DType::F32).to_vector<float>();
    for (float& e : v) e = std::fabs(e);
    return Tensor::from_vector(t.shape(), v);
  };
  const std::vector<float> magnitude =
      linear(magnitudes(x), magnitudes(w), Tensor()).to_vector<float>();
  ASSERT_EQ(yg.dtype(), DType::BF16);
  EXPECT_EQ(launches, 1u);
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i)
    ASSERT_NEAR(gpu[i], cpu[i], (std::ldexp(1.0, -8) + 1e-5) * magnitude[i] + 1e-6)
        << "element " << i;
}
#endif

#if DDPM_CUDA_EMULATION
// Where cuBLASLt has no algorithm for a problem (the emulated library made to find none),
// the layer takes the two passes, with the same result, and a line says so, once: the
// problem is planned once.
TEST(CudaOps, LinearWithoutACublasLtAlgorithmTakesTheTwoPasses) {
  REQUIRE_GPU();
  struct Restore {
    ~Restore() {
      cuda_emu::cublaslt_find_no_algorithm(false);
      set_precision(Precision::F32);
    }
  } restore;
  set_precision(Precision::BF16);
  const Tensor x = cast(rnd({7, 33}, 4), DType::BF16).to(Device::CUDA);
  const Tensor w = rnd({33, 16}, 5, 0.2).to(Device::CUDA), b = rnd({16}, 6).to(Device::CUDA);
  cuda::lt::set_bias_epilogue(false);
  const std::vector<float> two_passes =
      cast(linear(x, w, b), DType::F32).to(Device::CPU).to_vector<float>();
  cuda::lt::set_bias_epilogue(true);
  cuda_emu::cublaslt_find_no_algorithm(true);
  for (int call = 0; call < 2; ++call) {
    SCOPED_TRACE(call == 0 ? "planned" : "the plan kept");
    const int64_t matmuls = cuda_emu::cublaslt_matmuls();
    testing::internal::CaptureStdout();
    const Tensor y = linear(x, w, b);
    const std::string printed = testing::internal::GetCapturedStdout();
    EXPECT_EQ(cast(y, DType::F32).to(Device::CPU).to_vector<float>(), two_passes);
    EXPECT_EQ(cuda_emu::cublaslt_matmuls(), matmuls);
    const std::string line = "linear: cuBLASLt has no algorithm adding the bias in its epilogue "
                             "for M 7 K 33 N 16 (bf16 operands, bf16 output, bias aligned to ";
    EXPECT_EQ(printed.find(line) != std::string::npos, call == 0) << printed;
  }
}
#endif

// Runs the test body with one CUDA attention version selected, restoring the default.
class AttentionVersion {
 public:
  explicit AttentionVersion(AttentionAlgorithm a) : saved_(attention_algorithm()) {
    set_attention_algorithm(a);
  }
  ~AttentionVersion() { set_attention_algorithm(saved_); }

 private:
  AttentionAlgorithm saved_;
};

// A dominant key: 256 tokens, head dim 8, every query's first channel 30 or more and token
// 240's key (20, 0, ..., 0), so every row's largest score (over 200) sits past the first 224
// keys (the straightforward softmax's last warp of 32 threads) and exceeds the others by more
// than expf's range (88): unless the softmax subtracts the max over all L keys, P overflows
// to inf. The output is ~v of token 240 on both devices.
// Its bound is not the others': scores of ~212 carry an fp32 rounding of one ulp, 1.5e-5,
// which P = exp(s - lse) turns into a relative error of 1.5e-5 in every P of a row, and the
// gradient of v of token 240 sums P times the upstream gradient (rms 1) over all 256 rows:
// ~1.5e-5 x sqrt(256) = 2.4e-4 for each ulp by which the devices' scores differ (the GPU's
// dot products contract into FMAs, the CPU's do not; an H200 showed 1.7e-4 there, where the
// CPU emulation, which does not contract, matched within 1e-4). 2e-3 allows 8 ulps; a
// softmax without the max is inf or NaN (an ASSERT), and a wrong max is off by O(1).
constexpr double kDominantKeyTol = 2e-3;
Tensor dominant_key_qkv() {
  std::vector<float> v = rnd({1, 256, 3 * 8}, 6, 0.5).to_vector<float>();
  for (int64_t t = 0; t < 256; ++t) v[t * 24] = 30.0f + std::fabs(v[t * 24]);  // q[t][0]
  for (int64_t c = 0; c < 8; ++c) v[240 * 24 + 8 + c] = c == 0 ? 20.0f : 0.0f;  // k[240]
  return Tensor::from_vector(Shape{1, 256, 3 * 8}, v);
}

// Both versions face the same shapes: odd token counts that leave partial tiles (7, 9, 37,
// 70 tokens against the fused kernel's 16- and 32-row tiles), odd head dims (3, 5, 9: the
// odd shared-memory stride path), several heads, and the CIFAR model's 16x16 single-head
// case (L = 256, d = 256, batch 2); and the dominant key above (its own bound). Softmax sums
// over up to 256 terms and d-long dot products in a different order than the CPU: 1e-4.
void expect_attention_matches_cpu() {
  const auto attn = [](int64_t heads) {
    return [heads](const std::vector<Tensor>& in) { return attention(in[0], heads); };
  };
  expect_devices_agree(attn(1), {dominant_key_qkv()}, kDominantKeyTol, kDominantKeyTol);
  expect_devices_agree(attn(1), {rnd({2, 9, 18}, 1)}, 1e-4, 1e-4);
  expect_devices_agree(attn(3), {rnd({3, 7, 27}, 1)}, 1e-4, 1e-4);
  expect_devices_agree(attn(1), {rnd({2, 37, 15}, 3)}, 1e-4, 1e-4);
  expect_devices_agree(attn(2), {rnd({1, 70, 3 * 18}, 4, 0.5)}, 1e-4, 1e-4);
  if (test::small_shapes_only()) return;
  expect_devices_agree(attn(1), {rnd({2, 256, 768}, 1, 0.1)}, 1e-4, 1e-4);
  expect_devices_agree(attn(4), {rnd({2, 64, 3 * 128}, 2, 0.2)}, 1e-4, 1e-4);
}

// The kernels a forward of the selected version launches: the version selected is the one
// that runs (both give the CPU's numbers, so the comparisons cannot tell them apart).
// attention.cu: scores, the softmax of each row, the output; attention_fused.cu: one.
uint64_t attention_forward_launches() {
  const Tensor qkv = rnd({2, 9, 18}, 1).to(Device::CUDA);
  NoGradGuard no_grad;
  const DeviceWorkCounts before = device_work_counts();
  (void)attention(qkv, 1);
  return (device_work_counts() - before).launches;
}

TEST(CudaOps, AttentionStraightforwardVersion) {
  REQUIRE_GPU();
  AttentionVersion version(AttentionAlgorithm::Straightforward);
  EXPECT_EQ(attention_forward_launches(), 3u);
  expect_attention_matches_cpu();
}

TEST(CudaOps, AttentionFusedVersion) {
  REQUIRE_GPU();
  AttentionVersion version(AttentionAlgorithm::Fused);
  EXPECT_EQ(attention_forward_launches(), 1u);
  expect_attention_matches_cpu();
  if (test::small_shapes_only()) return;
  // a 32x32 map with 4 heads of 32 channels: L = 1024, many key tiles per query tile
  expect_devices_agree([](const std::vector<Tensor>& in) { return attention(in[0], 4); },
                       {rnd({1, 1024, 3 * 128}, 5, 0.2)}, 1e-4, 1e-4);
}

// cuBLAS's SGEMMs with the L x L matrices in memory (attention_gemm.cu), the same shapes and
// bounds: the products sum in another order than the CPU's, the row kernels as the
// straightforward version's do. Head dims 3, 5 and 9 too: fp32 rows need no alignment.
TEST(CudaOps, AttentionGemmVersion) {
  REQUIRE_GPU();
  AttentionVersion version(AttentionAlgorithm::Gemm);
  expect_attention_matches_cpu();
}

#if DDPM_WITH_CUDA
// The fp32 GEMM version's outputs, called directly: out, lse and dqkv (written outright
// into NaNs), with P stored over S and dS over dP (`shared`, as the op calls it) or each in
// a buffer of its own.
struct GemmAttentionRun {
  std::vector<float> out, lse, dqkv;
};
// Buffers for a run: uninitialised (poisoned: NaN until written), and the outputs read back.
Tensor gpu_empty(const Shape& shape) { return Tensor::empty(shape, DType::F32, Device::CUDA); }
GemmAttentionRun read_back(const Tensor& out, const Tensor& lse, const Tensor& dqkv) {
  return {out.to(Device::CPU).to_vector<float>(), lse.to(Device::CPU).to_vector<float>(),
          dqkv.to(Device::CPU).to_vector<float>()};
}
GemmAttentionRun run_gemm_attention(const AttentionShape& s, const Tensor& qkv,
                                    const Tensor& dout, bool shared) {
  const Shape matrices{cuda::attention_gemm_matrix_elements(s)};
  const auto empty = gpu_empty;
  const Tensor out = empty(dout.shape()), lse = empty(Shape{s.b * s.heads * s.l});
  const Tensor scores = empty(matrices), p = shared ? scores : empty(matrices);
  const Tensor dp = empty(matrices), ds = shared ? dp : empty(matrices);
  const Tensor dqkv = Tensor::full(qkv.shape(), NAN, DType::F32, Device::CUDA);
  cuda::attention_gemm_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                               p.data<float>(), scores.data<float>());
  cuda::attention_gemm_backward(s, qkv.data<float>(), p.data<float>(), dout.data<float>(),
                                dqkv.data<float>(), dp.data<float>(), ds.data<float>(),
                                GradWrite::Assign);
  return read_back(out, lse, dqkv);
}
#endif

// The op calls the fp32 GEMM version with P over S and dS over dP: each row kernel reads an
// element before it overwrites it, in the same thread, so the bits are those of separate
// buffers. lse, which the op does not ask for, is the CPU's (the op's test checks the rest).
TEST(CudaOps, AttentionGemmMatricesMayShareABuffer) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  AttentionShape s;
  s.b = 2, s.l = 37, s.c = 2 * 24, s.heads = 2;
  const Tensor qkv_cpu = rnd({s.b, s.l, 3 * s.c}, 21, 0.5);
  const Tensor qkv = qkv_cpu.to(Device::CUDA), dout = rnd({s.b, s.l, s.c}, 22).to(Device::CUDA);
  const GemmAttentionRun shared = run_gemm_attention(s, qkv, dout, true);
  const GemmAttentionRun separate = run_gemm_attention(s, qkv, dout, false);
  EXPECT_EQ(shared.out, separate.out);
  EXPECT_EQ(shared.dqkv, separate.dqkv);
  EXPECT_EQ(shared.lse, separate.lse);
  std::vector<float> out(shared.out.size()), lse(shared.lse.size());
  cpu::attention_forward<float>(s, qkv_cpu.data<float>(), out.data(), lse.data());
  expect_close(shared.lse, lse, 1e-5, 1e-5, "lse");
  expect_close(shared.out, out, 1e-4, 1e-4, "output");
#endif
}

// The op's output bits: those of the version `a` selects.
std::vector<float> attention_bits(AttentionAlgorithm a, const Tensor& qkv, int64_t heads) {
  AttentionVersion version(a);
  NoGradGuard no_grad;
  return attention(qkv, heads).to(Device::CPU).to_vector<float>();
}

// Auto (the default) runs the GEMM version at every shape, on both sides of L = 6 d: the op's
// bits are the GEMM version's, and not the fused kernel's (both give the CPU's numbers, so
// only the bits tell them apart). Past L = 6 d the GEMM version recomputes P (below).
TEST(CudaOps, AttentionAutoTakesTheGemmsAtEveryShape) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  EXPECT_EQ(attention_algorithm(), AttentionAlgorithm::Auto);
  struct Case {
    Shape qkv;
    int64_t heads;
    bool keeps_p;  // L <= 6 d
  };
  // L 37 at d 18 (6 d = 108); L 70 at d 8 (48); L 48 at d 8, the bound itself
  for (const Case& c : {Case{{2, 37, 3 * 18}, 1, true}, Case{{1, 70, 3 * 16}, 2, false},
                        Case{{1, 48, 3 * 8}, 1, true}}) {
    SCOPED_TRACE(c.qkv.str());
    AttentionShape s;
    s.b = c.qkv[0], s.l = c.qkv[1], s.c = c.qkv[2] / 3, s.heads = c.heads;
    EXPECT_EQ(cuda::attention_gemm_fp32_keeps_p(s), c.keeps_p);
    const Tensor qkv = rnd(c.qkv, 23, 0.5).to(Device::CUDA);
    const std::vector<float> chosen = attention_bits(AttentionAlgorithm::Auto, qkv, c.heads);
    const std::vector<float> gemm = attention_bits(AttentionAlgorithm::Gemm, qkv, c.heads);
    const std::vector<float> fused = attention_bits(AttentionAlgorithm::Fused, qkv, c.heads);
    ASSERT_NE(gemm, fused) << "the two versions' bits must differ for the test to tell them apart";
    EXPECT_EQ(chosen, gemm);
  }
  // the CIFAR-10 model's 16x16 attention (L 256, one head of 256) keeps P; a 32x32 map's
  // four heads of 32 (L 1024, matrices 10.7x qkv) recomputes it in chunks of 24 samples
  AttentionShape model;
  model.b = 128, model.l = 256, model.c = 256, model.heads = 1;
  EXPECT_TRUE(cuda::attention_gemm_fp32_keeps_p(model));
  EXPECT_EQ(cuda::attention_gemm_fp32_chunk(model), 128);  // 6 B d / L = 768: the batch
  model.l = 1024, model.c = 128, model.heads = 4;
  EXPECT_FALSE(cuda::attention_gemm_fp32_keeps_p(model));
  EXPECT_EQ(cuda::attention_gemm_fp32_chunk(model), 24);  // 6 * 128 * 32 / 1024
  model.b = 1;
  EXPECT_EQ(cuda::attention_gemm_fp32_chunk(model), 1);  // 0.19 of a sample: one at least
  model.b = 0;
  EXPECT_EQ(cuda::attention_gemm_fp32_chunk(model), 1);
#endif
}

#if DDPM_WITH_CUDA
// The fp32 GEMM version with P recomputed, called directly in chunks of `chunk` samples:
// out, lse and dqkv, the backward writing dqkv outright into NaNs (Assign) or adding to
// `start` (Accumulate; unused otherwise). Each pass's matrices in buffers of one chunk's size.
GemmAttentionRun run_recomputed_attention(const AttentionShape& s, int64_t chunk,
                                          const Tensor& qkv, const Tensor& dout,
                                          const Tensor& start, GradWrite write) {
  AttentionShape first = s;
  first.b = chunk;
  const Shape matrices{cuda::attention_gemm_matrix_elements(first)};
  const auto empty = gpu_empty;
  const Tensor out = empty(dout.shape()), lse = empty(Shape{s.b * s.heads * s.l});
  const Tensor scratch = empty(matrices), p = empty(matrices), dp = empty(matrices);
  const Tensor dqkv = write == GradWrite::Assign
                          ? Tensor::full(qkv.shape(), NAN, DType::F32, Device::CUDA)
                          : start.clone();
  cuda::attention_gemm_recompute_forward(s, chunk, qkv.data<float>(), out.data<float>(),
                                         lse.data<float>(), scratch.data<float>());
  cuda::attention_gemm_recompute_backward(s, chunk, qkv.data<float>(), dout.data<float>(),
                                          dqkv.data<float>(), p.data<float>(), dp.data<float>(),
                                          write);
  return read_back(out, lse, dqkv);
}
#endif

// P recomputed, batch 3 in chunks of 1, 2 (a short last chunk) and 3 samples, at L 37 and
// head dim 5 (past L = 6 d, where the op takes it), 2 heads: out, lse and dqkv against the
// CPU's (the GEMM version's bounds), the gradient both written outright and added to an
// earlier one. With the whole batch in one chunk the backward's P is the forward's to the
// bit: its dqkv is the P-keeping version's (same calls, so this holds on any GPU). A chunk
// of no samples is an error.
TEST(CudaOps, AttentionGemmRecomputesPByChunksOfSamples) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  AttentionShape s;
  s.b = 3, s.l = 37, s.c = 2 * 5, s.heads = 2;
  const Tensor qkv_cpu = rnd({s.b, s.l, 3 * s.c}, 31, 0.7);
  const Tensor dout_cpu = rnd({s.b, s.l, s.c}, 32);
  const Tensor start_cpu = rnd(qkv_cpu.shape(), 33);
  const Tensor qkv = qkv_cpu.to(Device::CUDA), dout = dout_cpu.to(Device::CUDA);
  const Tensor start = start_cpu.to(Device::CUDA);
  std::vector<float> out(static_cast<size_t>(s.b * s.l * s.c));
  std::vector<float> lse(static_cast<size_t>(s.b * s.heads * s.l));
  std::vector<float> dqkv(static_cast<size_t>(qkv_cpu.numel()), 0.0f);
  std::vector<float> added = start_cpu.to_vector<float>();
  cpu::attention_forward<float>(s, qkv_cpu.data<float>(), out.data(), lse.data());
  cpu::attention_backward<float>(s, qkv_cpu.data<float>(), lse.data(), dout_cpu.data<float>(),
                                 dqkv.data());
  cpu::attention_backward<float>(s, qkv_cpu.data<float>(), lse.data(), dout_cpu.data<float>(),
                                 added.data());
  for (const int64_t chunk : {1, 2, 3}) {
    SCOPED_TRACE("chunks of " + std::to_string(chunk));
    const GemmAttentionRun assigned =
        run_recomputed_attention(s, chunk, qkv, dout, start, GradWrite::Assign);
    expect_close(assigned.out, out, 1e-4, 1e-4, "output");
    expect_close(assigned.lse, lse, 1e-5, 1e-5, "lse");
    expect_close(assigned.dqkv, dqkv, 1e-4, 1e-4, "dqkv written outright");
    const GemmAttentionRun accumulated =
        run_recomputed_attention(s, chunk, qkv, dout, start, GradWrite::Accumulate);
    expect_close(accumulated.dqkv, added, 1e-4, 1e-4, "dqkv added to an earlier gradient");
    EXPECT_EQ(accumulated.out, assigned.out);
  }
  const GemmAttentionRun whole = run_recomputed_attention(s, s.b, qkv, dout, start,
                                                          GradWrite::Assign);
  const GemmAttentionRun kept = run_gemm_attention(s, qkv, dout, true);
  EXPECT_EQ(whole.out, kept.out);
  EXPECT_EQ(whole.lse, kept.lse);
  EXPECT_EQ(whole.dqkv, kept.dqkv);
  // a chunk of no samples is refused, naming the pass, the chunk and the batch
  test::expect_error(
      [&] { run_recomputed_attention(s, 0, qkv, dout, start, GradWrite::Assign); },
      {"fp32 GEMM attention forward, P recomputed: chunks of 0 samples (at least 1) for a "
       "batch of 3"});
#endif
}

// What recomputing P is for: memory. At L 192, head dim 8 (2 heads, batch 5), the batch's
// matrices are 8x qkv, 1.47 MB each, and kept P plus the backward's dP would peak at 2.9 MB
// or more over the step's other tensors. The op runs chunks of one sample
// (attention_gemm_fp32_chunk: 6 B d / L = 1.25), so a forward and backward through it
// allocate at most two chunks' matrices (295 KB each) beside the run's six qkv-sized tensors
// or smaller (qkv, its gradient, out, the upstream gradient and the loss's). Its output is
// the chunked version's called directly, to the bit, and its gradient the CPU's.
TEST(CudaOps, AttentionGemmsRecomputePWhereItWouldOutgrowQkv) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  AttentionShape s;
  s.b = 5, s.l = 192, s.c = 2 * 8, s.heads = 2;
  ASSERT_FALSE(cuda::attention_gemm_fp32_keeps_p(s));
  const int64_t chunk = cuda::attention_gemm_fp32_chunk(s);
  ASSERT_EQ(chunk, 1);
  const Tensor qkv_cpu = rnd({s.b, s.l, 3 * s.c}, 34, 0.5);
  const auto attn = [&s](const std::vector<Tensor>& in) { return attention(in[0], s.heads); };
  cuda_reset_peak_bytes_in_use();
  const size_t before = cuda_peak_bytes_in_use();
  const DeviceRun gpu = run_on(Device::CUDA, attn, {qkv_cpu});
  const size_t peak = cuda_peak_bytes_in_use() - before;
  const size_t chunk_bytes = static_cast<size_t>(chunk * s.heads * s.l * s.l) * sizeof(float);
  const size_t batch_bytes = chunk_bytes * static_cast<size_t>(s.b / chunk);
  const size_t qkv_bytes = static_cast<size_t>(qkv_cpu.numel()) * sizeof(float);
  EXPECT_LE(peak, 2 * chunk_bytes + 6 * qkv_bytes);
  EXPECT_LT(2 * chunk_bytes + 6 * qkv_bytes, 2 * batch_bytes) << "the bound must tell them apart";
  const DeviceRun cpu = run_on(Device::CPU, attn, {qkv_cpu});
  expect_close(gpu.out, cpu.out, 1e-4, 1e-4, "output");
  expect_close(gpu.grads[0], cpu.grads[0], 1e-4, 1e-4, "gradient");
  const Tensor qkv = qkv_cpu.to(Device::CUDA);
  const Tensor dout = Tensor::zeros(Shape{s.b, s.l, s.c}, DType::F32, Device::CUDA);
  EXPECT_EQ(gpu.out,
            run_recomputed_attention(s, chunk, qkv, dout, Tensor(), GradWrite::Assign).out);
#endif
}

// Under Precision::BF16 the op runs the bf16 flash kernels on the GPU (head dims 32 and 64
// here) and the CPU's bf16 model (kernels/cpu/attention.h: q, k, v, dout, P and dS rounded).
// Both are within 2^-8 of the magnitude sums of the exact attention of the rounded operands
// (tests/test_cuda_attention_bf16.cpp, tests/test_precision.cpp) but round P at different
// points (the GPU before normalising, by the running max), so they agree to twice that:
// 3e-2 of the rms for the output, 5e-2 for the gradient. The GPU output is not the fp32
// fused kernel's on pre-rounded operands: the flash kernels ran.
TEST(CudaOps, AttentionUnderBf16RunsTheFlashKernels) {
  REQUIRE_GPU();
  struct Case {
    Shape qkv;
    int64_t heads;
  };
  for (const Case& c : {Case{{2, 37, 3 * 64}, 2}, Case{{1, 70, 3 * 128}, 2}}) {
    SCOPED_TRACE(c.qkv.str());
    const auto f = [&c](const std::vector<Tensor>& in) { return attention(in[0], c.heads); };
    const std::vector<Tensor> in = {rnd(c.qkv, 11, 1.5)};
    set_precision(Precision::BF16);
    const DeviceRun cpu = run_on(Device::CPU, f, in), gpu = run_on(Device::CUDA, f, in);
    set_precision(Precision::F32);
    test::expect_close_to_rms(gpu.out, cpu.out, 3e-2, "output");
    test::expect_close_to_rms(gpu.grads[0], cpu.grads[0], 5e-2, "gradient");
    std::vector<float> pre = in[0].to_vector<float>();
    for (float& x : pre) x = round_to_bf16(x);
    const DeviceRun fp32 =
        run_on(Device::CUDA, f, {Tensor::from_vector(c.qkv, pre)});
    EXPECT_NE(gpu.out, fp32.out);
  }
}

// The fused kernels keep d-wide rows in shared memory, five or six tiles of them in the
// backward: at head dim 600 the dk dv kernel needs 232960 bytes, more than an H100 (or the
// emulated device) gives a block, while the forward (156096) fits. The backward stops with
// the sizes and the way out instead of failing to launch (a smaller device stops at dq, or
// at the forward).
TEST(CudaOps, AttentionFusedRefusesAHeadDimPastTheDevicesSharedMemory) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  AttentionShape s;
  s.b = 1, s.l = 4, s.c = 600, s.heads = 1;
  const Tensor qkv = rnd({1, 4, 3 * 600}, 31, 0.5).to(Device::CUDA);
  const Tensor out = Tensor::empty(Shape{1, 4, 600}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{1, 1, 4}, DType::F32, Device::CUDA);
  const Tensor dqkv = Tensor::zeros(Shape{1, 4, 3 * 600}, DType::F32, Device::CUDA);
  const Tensor delta = Tensor::empty(Shape{4}, DType::F32, Device::CUDA);
  const std::string allows = "bytes of shared memory per block, the device allows " +
                             std::to_string(cuda::max_shared_memory_per_block());
  test::expect_error(
      [&] {
        cuda::attention_fused_forward(s, qkv.data<float>(), out.data<float>(),
                                      lse.data<float>());
        cuda::attention_fused_backward(s, qkv.data<float>(), out.data<float>(),
                                       lse.data<float>(), out.data<float>(),
                                       dqkv.data<float>(), delta.data<float>());
      },
      {"fused attention ", ": head dim 600 needs ", allows.c_str(),
       "use the straightforward attention version"});
#endif
}

// Two shapes: head dim 32 (L 100 <= 6 d: the GEMM version keeps P) and 8 (it recomputes P,
// in chunks of one sample).
TEST(CudaOps, AttentionVersionsAreDeterministic) {
  REQUIRE_GPU();
  for (AttentionAlgorithm a : {AttentionAlgorithm::Straightforward, AttentionAlgorithm::Fused,
                               AttentionAlgorithm::Gemm}) {
    for (const int64_t d : {32, 8}) {
      SCOPED_TRACE("head dim " + std::to_string(d));
      AttentionVersion version(a);
      const auto f = [](const std::vector<Tensor>& in) { return attention(in[0], 2); };
      const std::vector<Tensor> in = {rnd({3, 100, 3 * 2 * d}, 6, 0.5)};
      const DeviceRun first = run_on(Device::CUDA, f, in), second = run_on(Device::CUDA, f, in);
      EXPECT_EQ(first.out, second.out);
      EXPECT_EQ(first.grads[0], second.grads[0]);
    }
  }
}

TEST(CudaOps, UpsampleConcatSplit) {
  REQUIRE_GPU();
  expect_devices_agree([](const std::vector<Tensor>& in) { return upsample_nearest2x(in[0]); },
                       {rnd({3, 5, 7, 65}, 1)}, kElemAtol, kElemRtol);
  expect_devices_agree([](const std::vector<Tensor>& in) { return concat({in[0], in[1]}); },
                       {rnd({3, 5, 7, 3}, 1), rnd({3, 5, 7, 65}, 2)}, kElemAtol, kElemRtol);
  expect_devices_agree(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = split(in[0], {5, 60});
        return concat({scale(p[1], 2.0), p[0]});
      },
      {rnd({3, 5, 7, 65}, 1)}, kElemAtol, kElemRtol);
  // Copies whose layout allows 16- and 8-byte words (kernels/cuda/resample.cu copy_as):
  // parts of 8, 4, 2, 2 and 16 channels at offsets 0, 8, 12, 14, 16 of 32 (float4, float4,
  // float2, float2, float4), their gradients copied back the same way; then parts of 36
  // channels at offsets 0, 2 and 6, whose 4 channels at offset 2 fill whole float4 words
  // but are not 16-byte aligned (float2).
  expect_devices_agree([](const std::vector<Tensor>& in) { return concat(in); },
                       {rnd({2, 3, 5, 8}, 3), rnd({2, 3, 5, 4}, 4), rnd({2, 3, 5, 2}, 5),
                        rnd({2, 3, 5, 2}, 6), rnd({2, 3, 5, 16}, 7)},
                       kElemAtol, kElemRtol);
  expect_devices_agree(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = split(in[0], {2, 4, 30});
        return concat({p[1], scale(p[2], 2.0), p[0]});
      },
      {rnd({2, 3, 5, 36}, 8)}, kElemAtol, kElemRtol);
}

TEST(CudaOps, ReductionsAndMse) {
  REQUIRE_GPU();
  // 212,355 values: the CPU sums in double, the GPU in float trees; relative error of a
  // float sum grows like sqrt(n) eps ~ 5e-5 in the worst case.
  const Shape s{3, 33, 33, 65};
  expect_devices_agree([](const std::vector<Tensor>& in) { return sum(in[0]); }, {rnd(s, 1)},
                       1e-3, 1e-4);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mean(in[0]); }, {rnd(s, 1)},
                       1e-6, 1e-4);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mse(in[0], in[1]); },
                       {rnd(s, 1), rnd(s, 2)}, 1e-6, 1e-4);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mse_per_sample(in[0], in[1]); },
                       {rnd(s, 1), rnd(s, 2)}, 1e-6, 1e-4);
  // and small: 20 values a sample, where a count off by one is 5%, not 1e-5 as above
  const Shape small{3, 2, 2, 5};
  expect_devices_agree([](const std::vector<Tensor>& in) { return mean(in[0]); },
                       {rnd(small, 1)}, 1e-6, 1e-5);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mse(in[0], in[1]); },
                       {rnd(small, 1), rnd(small, 2)}, 1e-6, 1e-5);
  expect_devices_agree([](const std::vector<Tensor>& in) { return mse_per_sample(in[0], in[1]); },
                       {rnd(small, 1), rnd(small, 2)}, 1e-6, 1e-5);
}

TEST(CudaOps, ReductionsAreDeterministic) {
  REQUIRE_GPU();
  const Tensor x = rnd({3, 33, 33, 65}, 1).to(Device::CUDA);
  const float a = static_cast<float>(sum(x).item()), b = static_cast<float>(sum(x).item());
  EXPECT_EQ(a, b);
}

TEST(CudaOps, DropoutMaskIsTheCpuMaskAndTimestepEmbedding) {
  REQUIRE_GPU();
  // The mask is the same Philox bits on both devices: outputs agree exactly.
  expect_devices_agree([](const std::vector<Tensor>& in) { return dropout(in[0], 0.3, 7, 11); },
                       {rnd({3, 5, 7, 65}, 1)}, 0.0, 1e-7);
  const Tensor t = Tensor::from_vector<float>(Shape{4}, {0, 1, 500, 999});
  const std::vector<float> cpu = timestep_embedding(t, 128).to_vector<float>();
  const std::vector<float> gpu = timestep_embedding(t.to(Device::CUDA), 128).to_vector<float>();
  // double sin/cos on both sides, rounded to float: equal up to one float ulp
  for (size_t i = 0; i < cpu.size(); ++i) ASSERT_NEAR(gpu[i], cpu[i], 1.2e-7) << i;
}

// AdamW, EMA and clipping on the flat buffer: the same steps on both devices, with the EMA
// as its own pass, in AdamW's (the trainer's way before the gate), and gated: the step
// summary computed on the device and the update clipped and gated by it without the host
// reading the norm (the trainer's way). The last gated step has a NaN loss: not applied.
TEST(CudaOps, OptimiserStepsMatchTheCpu) {
  REQUIRE_GPU();
  // GatedF64: the same losses in double (the summary kernel's f64 instantiation).
  enum Way { EmaAfter, EmaInPass, Gated, GatedF64 };
  for (const Way way : {EmaAfter, EmaInPass, Gated, GatedF64}) {
  SCOPED_TRACE(way == EmaAfter    ? "EMA after AdamW"
               : way == EmaInPass ? "EMA in AdamW's pass"
               : way == Gated     ? "gated by the summary"
                                  : "gated by the summary of f64 losses");
  auto run = [way](Device d) {
    ParameterStore store;
    store.add("a", Shape{1000}, Init::normal(1.0));
    store.add("b", Shape{3, 65}, Init::uniform(0.5));
    store.finalize(d, DType::F32, 5);
    AdamWConfig c;
    c.lr = 1e-2;
    c.weight_decay = 0.1;
    AdamW opt(store, c);
    Ema ema(store, 0.9, true);
    std::vector<double> norms, summaries;
    for (int step = 0; step < 4; ++step) {
      store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, step).to(d));
      if (way >= Gated) {
        const float loss = step == 3 ? std::nanf("") : 0.25f * step;
        const DType losses = way == GatedF64 ? DType::F64 : DType::F32;
        const Tensor summary = opt.step_summary(
            Tensor::from_vector<float>(Shape{2}, {1.0f, 2.0f}).to(losses).to(d),
            Tensor::from_vector<float>(Shape{}, {loss}).to(losses).to(d), 20.0);
        opt.gated_step(1e-2, summary, &ema, step);
        const std::vector<double> back = summary.to(Device::CPU).to_vector<double>();
        const StepGate g = summary_gate(back);
        opt.resolve_gated_step(g);
        norms.push_back(g.grad_norm);
        summaries.insert(summaries.end(), back.begin(), back.end());
      } else {
        norms.push_back(clip_grad_norm(store, 20.0));
        if (way == EmaInPass) {
          opt.step(1e-2, &ema, step);
        } else {
          opt.step(1e-2);
          ema.update(step);
        }
      }
    }
    return std::make_tuple(store.flat_data().to(Device::CPU).to_vector<float>(),
                           ema.weights().to(Device::CPU).to_vector<float>(), norms, summaries,
                           opt.steps_taken());
  };
  const auto [p_cpu, e_cpu, n_cpu, s_cpu, t_cpu] = run(Device::CPU);
  const auto [p_gpu, e_gpu, n_gpu, s_gpu, t_gpu] = run(Device::CUDA);
  // Same float arithmetic per element (sqrtf and division are IEEE on both); only the
  // compiler's contraction into FMA on the GPU may differ: a few ulp.
  expect_close(p_gpu, p_cpu, 1e-6, 1e-5, "parameters after AdamW");
  expect_close(e_gpu, e_cpu, 1e-6, 1e-5, "EMA weights");
  for (size_t i = 0; i < n_cpu.size(); ++i) EXPECT_NEAR(n_gpu[i], n_cpu[i], 1e-9 * n_cpu[i]);
  EXPECT_EQ(t_gpu, t_cpu);
  EXPECT_EQ(t_cpu, way >= Gated ? 3 : 4);  // the NaN step was refused on both devices
  ASSERT_EQ(s_gpu.size(), s_cpu.size());
  // The summaries: per-sample losses and loss copied exactly, the norm (a double sum in
  // another order) and the clip factor to 1e-9, the verdict exactly (NaN == NaN here).
  // The bias corrections (last two of each gate) the same bits: the same multiplications.
  for (size_t i = 8; i <= s_cpu.size(); i += 8) {
    EXPECT_EQ(s_gpu[i - 2], s_cpu[i - 2]) << i;
    EXPECT_EQ(s_gpu[i - 1], s_cpu[i - 1]) << i;
  }
  for (size_t i = 0; i < s_cpu.size(); ++i) {
    if (std::isnan(s_cpu[i])) {
      EXPECT_TRUE(std::isnan(s_gpu[i])) << i;
    } else {
      EXPECT_NEAR(s_gpu[i], s_cpu[i], 1e-9 * std::abs(s_cpu[i])) << i;
    }
  }
  }
}

struct GnCase {
  Shape x;
  int64_t groups;
};

#if DDPM_WITH_CUDA
using test::GroupNormVersion;

// Every mapping (kernels/cuda/group_norm.cu) against the CPU reference, on shapes that take
// each of the slab mappings' paths: 65 channels in 13 groups (a slab of all 13 groups, 65
// channels: 3 rows per pass and 61 idle threads; no runs of 8, so v3 runs v2), 2 channels
// per group (8 groups a slab, 16 channels; v3: a run spans 4 groups), 16 per group (a slab
// of one group; v3: a group spans 2 runs), 300 per group (wider than a block: no slab, v1
// runs), 256 in one group (v2: a row per pass, the dh kernel's 32-row pieces, the last one
// partial), 12 per group (v3: slabs of 24 channels, 3 threads a row and one idle), 256 in
// one group over 400 rows (v3: 8 rows a pass, the dh kernel's 256-row pieces, the last one
// partial), then the CIFAR-10 model's shapes.
// Statistics in float (GPU) vs double (CPU), over up to 32*32*4 = 4096 values per group.
const GnCase kGnCases[] = {{{3, 5, 7, 65}, 13},    {{3, 9, 9, 64}, 32},    {{2, 5, 3, 48}, 3},
                           {{2, 3, 5, 600}, 2},    {{2, 5, 7, 256}, 1},    {{2, 5, 3, 48}, 4},
                           {{1, 20, 20, 256}, 1},  {{2, 32, 32, 128}, 32}, {{2, 16, 16, 256}, 32},
                           {{2, 8, 8, 256}, 32},   {{2, 4, 4, 256}, 32},   {{2, 32, 32, 384}, 32},
                           {{2, 16, 16, 512}, 32}};

// Every mapping on every case of kGnCases (the awkward ones only with small shapes), with
// x, gamma and beta drawn from that case's own streams.
template <class Check>
void for_each_gn_case(const Check& check) {
  const size_t count = test::small_shapes_only() ? 7 : std::size(kGnCases);
  for (const cuda::GroupNormMapping mapping : test::kGroupNormMappings) {
    const GroupNormVersion version(mapping);
    uint64_t stream = 10;
    for (size_t i = 0; i < count; ++i, stream += 3) {
      const GnCase& c = kGnCases[i];
      SCOPED_TRACE(c.x.str() + " / " + std::to_string(c.groups) + ", " +
                   test::mapping_name(mapping));
      const int64_t ch = c.x[3];
      check(c.groups, std::vector<Tensor>{rnd(c.x, stream, 2.0), rnd({ch}, stream + 1),
                                          rnd({ch}, stream + 2)});
    }
  }
}

TEST(CudaOps, GroupNormAwkwardAndModelShapes) {
  REQUIRE_GPU();
  for_each_gn_case([](int64_t g, const std::vector<Tensor>& in) {
    expect_devices_agree(
        [g](const std::vector<Tensor>& t) { return group_norm(t[0], t[1], t[2], g, 1e-6); },
        in, 2e-4, 2e-4);
    expect_devices_agree(
        [g](const std::vector<Tensor>& t) { return group_norm_silu(t[0], t[1], t[2], g, 1e-6); },
        in, 2e-4, 2e-4);
    // Dropout in the same kernels: the CPU's mask (Philox by element).
    expect_devices_agree(
        [g](const std::vector<Tensor>& t) {
          return group_norm_silu_dropout(t[0], t[1], t[2], g, 0.3, 5, 9, 1e-6);
        },
        in, 2e-4, 2e-4);
  });
}

// On the GPU the fused GN+SiLU+dropout gives the bits of the GN+SiLU kernel followed by the
// dropout kernel, forward and backward. (Not under ThreadSanitizer: the same kernels as the
// test above, run again for their bits.)
TEST(CudaOps, GroupNormSiluDropoutIsTheUnfusedChainBitForBit) {
  REQUIRE_GPU();
  for_each_gn_case([](int64_t g, const std::vector<Tensor>& in) {
    const DeviceRun one = run_on(Device::CUDA, [g](const std::vector<Tensor>& t) {
      return group_norm_silu_dropout(t[0], t[1], t[2], g, 0.3, 5, 9, 1e-6);
    }, in);
    const DeviceRun two = run_on(Device::CUDA, [g](const std::vector<Tensor>& t) {
      return dropout(group_norm_silu(t[0], t[1], t[2], g, 1e-6), 0.3, 5, 9);
    }, in);
    EXPECT_EQ(one.out, two.out);
    EXPECT_EQ(one.grads, two.grads);
  });
}

// The default mapping takes v4 (the slab in registers) where its forward has a plan: every
// map of the U-Net (128, 256 and 512 channels: 16-channel slabs, 2 threads a row; at 32x32
// the backward's 4 passes of 256 rows are 512 threads, the most v4 takes; 384 channels:
// 24-channel slabs, 3 threads a row, 10 rows a warp, whose backward at 32x32 would want 26
// warps and falls back to v3 alike under the default and under v4). Not a 64x64 map (1,024
// threads): v3's runs there, where the map has rows enough for its threads; v2 where C
// leaves no run of 8 (65 channels), v1 where a group is wider than a block. Under it the
// kernels give the bits of the mapping it names (the GPU part).
TEST(CudaOps, GroupNormByShapeTakesRunsWhereTheMapHasRowsForThem) {
  using M = cuda::GroupNormMapping;
  const GroupNormVersion version(M::ByShape);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 32 * 32, 128, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 32 * 32, 384, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 16 * 16, 384, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 16 * 16, 256, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 8 * 8, 256, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 4 * 4, 512, 32}), M::SlabInRegisters);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 64 * 64, 128, 32}), M::ChannelRuns);
  EXPECT_EQ(cuda::group_norm_mapping_for({128, 32 * 32, 65, 13}), M::ChannelSlab);
  EXPECT_EQ(cuda::group_norm_mapping_for({2, 15, 600, 2}), M::BlockPerGroup);
  REQUIRE_GPU();
  for (const Shape& x : {Shape{2, 32, 32, 128}, Shape{2, 16, 16, 256}, Shape{2, 32, 32, 384}}) {
    SCOPED_TRACE(x.str());
    const auto f = [](const std::vector<Tensor>& in) {
      return group_norm_silu_dropout(in[0], in[1], in[2], 32, 0.3, 5, 9, 1e-6);
    };
    const std::vector<Tensor> in = {rnd(x, 40, 2.0), rnd({x[3]}, 41), rnd({x[3]}, 42)};
    const DeviceRun by_shape = run_on(Device::CUDA, f, in);
    const GroupNormVersion named(cuda::group_norm_mapping_for({x[0], x[1] * x[2], x[3], 32}));
    const DeviceRun explicit_run = run_on(Device::CUDA, f, in);
    EXPECT_EQ(by_shape.out, explicit_run.out);
    EXPECT_EQ(by_shape.grads, explicit_run.grads);
  }
}
#endif

// eps where the CPU reference has it, inside the root: groups whose variance (1e-6) is eps's
// own, where rsqrt(var + eps) and rsqrt(var + 2 eps) differ by 18%; on each mapping's paths
// (4 channels a group; 5 of 65 in 13 groups; one group of 256). The values sit near 0.1,
// where float keeps their 1e-3 spread to 1e-5.
#if DDPM_WITH_CUDA
TEST(CudaOps, GroupNormEpsIsTheReferencesOnTightGroups) {
  REQUIRE_GPU();
  const GnCase cases[] = {{{2, 4, 4, 16}, 4}, {{2, 5, 7, 65}, 13}, {{1, 20, 20, 256}, 1}};
  for (const cuda::GroupNormMapping mapping : test::kGroupNormMappings) {
    const GroupNormVersion version(mapping);
    uint64_t stream = 70;
    for (const GnCase& c : cases) {
      SCOPED_TRACE(c.x.str() + ", " + test::mapping_name(mapping));
      const int64_t ch = c.x[3], g = c.groups;
      const Tensor x = add(rnd(c.x, stream, 1e-3), Tensor::full(c.x, 0.1, DType::F32));
      expect_devices_agree(
          [g](const std::vector<Tensor>& in) { return group_norm(in[0], in[1], in[2], g, 1e-6); },
          {x, rnd({ch}, stream + 1), rnd({ch}, stream + 2)}, 2e-3, 2e-3);
      stream += 3;
    }
  }
}
#endif

// Both CUDA convolution versions against the CPU reference: forward, dgrad, wgrad and the
// bias gradient, on awkward shapes and every convolution shape of the CIFAR-10 U-Net (batch
// 2: the batch only scales M). Float sums over up to K = 9*384 = 3456 (forward/dgrad) or
// M = 2*32*32 = 2048 (wgrad) terms in different orders on the two devices: relative error
// ~ sqrt(K) * 6e-8 ~ 4e-6 typical; bounds 2e-4 leave room for unlucky cancellation.
TEST(CudaOps, Conv2dBothVersionsMatchTheCpu) {
  REQUIRE_GPU();
  for (ConvAlgorithm algo : {ConvAlgorithm::Naive, ConvAlgorithm::Tiled}) {
    set_conv_algorithm(algo);
    uint64_t stream = 100;
    for (const ConvCase& c : conv_cases()) {
      SCOPED_TRACE(c.x.str() + " k" + std::to_string(c.k) + " -> " + std::to_string(c.c_out) +
                   (algo == ConvAlgorithm::Naive ? " naive" : " tiled"));
      const Conv2dParams p = c.p;
      const double wscale = 1.0 / std::sqrt(double(c.k * c.k * c.x[3]));
      expect_devices_agree(
          [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); },
          {rnd(c.x, stream), rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, wscale),
           rnd({c.c_out}, stream + 2)},
          2e-4, 2e-4);
      stream += 3;
    }
  }
  set_conv_algorithm(ConvAlgorithm::Tiled);
}

// v1-v3 split their GEMM indices by 32-bit divisions (kernels/fast_divide.h): a batch of
// 2^31 pixels or more, in or out, is refused before anything is read (the pointers here
// point at nothing that large), naming the shape; the largest shape they take is not
// allocated here, but the divisions' exactness up to 2^31 is tests/test_fast_divide.cpp's.
TEST(CudaOps, Conv2dV1ToV3RefuseBatchesOf2To31Pixels) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  const Tensor buffer = Tensor::zeros(Shape{64}, DType::F32, Device::CUDA);
  float* const p = buffer.data<float>();
  const Conv2dShape in = conv2d_shape(Shape{65536, 256, 256, 1}, Shape{1, 1, 1, 1}, {});
  const Conv2dShape out = conv2d_shape(Shape{32768, 512, 256, 1}, Shape{1, 1, 1, 1}, {});
  for (const cuda::ConvAlgo a :
       {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled, cuda::ConvAlgo::TensorCore}) {
    SCOPED_TRACE(cuda::conv_algo_name(a));
    test::expect_error([&] { cuda::conv2d_forward(in, p, p, nullptr, p, a, p); },
                       {"convolutions v1-v3 split their indices in 32 bits",
                        "got 65536 x 256 x 256 x 1 in"});
    test::expect_error(
        [&] { cuda::conv2d_backward(out, p, p, p, p, p, nullptr, a, p); },
        {"fewer than 2^31 pixels in and out", "got 32768 x 512 x 256 x 1 in"});
  }
#endif
}

// upsample_conv3x3 (engine/ops.h: four 2x2 convolutions of x with folded kernels, then the
// phases interleaved) on v2: the folds are the CPU's bits (the same fp32 sums in the same
// order, kernels/upsample_conv.h), the op and its gradients within the fp32 convolution
// bounds above; then the interleaving alone, exact, at channel counts whose copies move
// float4, float2 and single floats (kernels/cuda/resample.cu interleave_as).
TEST(CudaOps, UpsampleConvByPhaseMatchesTheCpu) {
  REQUIRE_GPU();
  const Tensor w = rnd({3, 3, 5, 7}, 1);
  const std::vector<Tensor> cpu = fold_upsample_weights(w),
                            gpu = fold_upsample_weights(w.to(Device::CUDA));
  for (int p = 0; p < 4; ++p)
    EXPECT_EQ(gpu[p].to(Device::CPU).to_vector<float>(), cpu[p].to_vector<float>()) << p;
  for (const int64_t c : {16, 5})
    expect_devices_agree(
        [](const std::vector<Tensor>& in) { return upsample_conv3x3(in[0], in[1], in[2]); },
        {rnd({2, 3, 5, c}, 2), rnd({3, 3, c, 6}, 3, 0.3), rnd({6}, 4)}, 2e-4, 2e-4);
  for (const int64_t c : {16, 6, 5}) {
    SCOPED_TRACE(c);
    const Shape s{2, 3, 5, c};
    expect_devices_agree([](const std::vector<Tensor>& in) { return interleave_phases(in); },
                         {rnd(s, 5), rnd(s, 6), rnd(s, 7), rnd(s, 8)}, 0.0, 0.0);
  }
}

// conv2d_add (the convolution with a per-sample and a residual addend) on v1 and v2: the
// adds run as separate passes after the GEMM, in the CPU's order; fp32 bounds as above.
TEST(CudaOps, Conv2dAddMatchesTheCpu) {
  REQUIRE_GPU();
  for (ConvAlgorithm algo : {ConvAlgorithm::Naive, ConvAlgorithm::Tiled}) {
    set_conv_algorithm(algo);
    uint64_t stream = 300;
    for (const ConvCase& c : conv_cases()) {
      SCOPED_TRACE(c.x.str() + " k" + std::to_string(c.k) + " -> " + std::to_string(c.c_out));
      const Conv2dParams p = c.p;
      const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, p);
      expect_devices_agree(
          [p](const std::vector<Tensor>& in) { return conv2d_add(in[0], in[1], in[2], p, in[3], in[4]); },
          {rnd(c.x, stream), rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, 0.1),
           rnd({c.c_out}, stream + 2), rnd({s.n, s.c_out}, stream + 3),
           rnd({s.n, s.out_h(), s.out_w(), s.c_out}, stream + 4)},
          2e-4, 2e-4);
      stream += 5;
      if (algo == ConvAlgorithm::Naive) break;  // the adds are the same code for every GEMM
    }
  }
  set_conv_algorithm(ConvAlgorithm::Tiled);
}

// v3 (TF32 tensor cores) against the CPU reference on the same shapes. Each operand is
// rounded to a 10-bit mantissa (relative 2^-11 = 4.9e-4), so each product is off by up to
// ~1e-3 relative with random sign; over K terms the error is ~6e-4 of the output's rms
// (the sum grows like sqrt(K) as the error does). 1e-2 of the rms is ~16 standard
// deviations: a wrong index or a missed tile is off by the whole rms.
TEST(CudaOps, Conv2dTensorCoreMatchesTheCpuWithinTf32Rounding) {
  REQUIRE_GPU();
  set_conv_algorithm(ConvAlgorithm::TensorCore);
  uint64_t stream = 500;
  for (const ConvCase& c : conv_cases()) {
    SCOPED_TRACE(c.x.str() + " k" + std::to_string(c.k) + " -> " + std::to_string(c.c_out));
    const Conv2dParams p = c.p;
    const double wscale = 1.0 / std::sqrt(double(c.k * c.k * c.x[3]));
    const std::vector<Tensor> in = {rnd(c.x, stream), rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, wscale),
                                    rnd({c.c_out}, stream + 2)};
    const auto f = [p](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], t[2], p); };
    const DeviceRun cpu = run_on(Device::CPU, f, in), gpu = run_on(Device::CUDA, f, in);
    test::expect_close_to_rms(gpu.out, cpu.out, 1e-2, "output");
    for (size_t k = 0; k < in.size(); ++k)
      test::expect_close_to_rms(gpu.grads[k], cpu.grads[k], 1e-2, "gradient of input " + std::to_string(k));
    // Under Precision::TF32 the CPU rounds the operands as v3 does (cvt.rna, kernels/tf32.h),
    // so the products are the same (exact in fp32) and only the sums differ: their order,
    // ~1e-6 of the rms over K <= 4608 terms, and the tensor cores' accumulation, which is
    // not IEEE round-to-nearest: it truncates the aligned sum toward zero (Fasi, Higham,
    // Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor cores", 2021). An H200 gave
    // every output and dgrad element a little smaller in magnitude than the CPU's (24.99875
    // against 24.99889 over K = 1152), which the emulation, rounding to nearest, cannot
    // show. So the bound adds, per sum of K terms, up to one fp32 ulp (2^-23) lost at each
    // of at most K / 4 accumulations (the tensor cores add four or more products at a time),
    // relative to the element and (for sums that cancel) to the rms:
    // 3.4e-5 at K = 1152, 1.4e-4 at 4608. A rounding rule of the operands that differs
    // (truncation: ~1e-3 of each element, biased) still fails it.
    // The same under TF32's default, v4 in TF32 (kernels/cuda/conv2d_tf32.cu): the same
    // products, and where they come as four exact products of bf16 pieces, four times the
    // terms in each sum (bounded so for every pass; the bias gradient's excepted: a column
    // sum of the fp32 dy either way).
    set_precision(Precision::TF32);
    const DeviceRun cpu32 = run_on(Device::CPU, f, in);
    const Conv2dShape cs = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, p);
    for (const ConvAlgorithm algo : {ConvAlgorithm::TensorCore, ConvAlgorithm::Tiled}) {
      const bool v4 = algo != ConvAlgorithm::TensorCore;
      SCOPED_TRACE(v4 ? "v4 in TF32" : "v3");
      set_conv_algorithm(algo);
      const DeviceRun gpu32 = run_on(Device::CUDA, f, in);
      const int64_t terms = v4 ? 4 : 1;
      const auto truncation = [](int64_t k) { return std::ldexp(double(k) / 4, -23); };
      const double t_out = truncation(terms * c.k * c.k * c.x[3]);  // forward: K = k k C_in
      const double t_grads[] = {truncation(terms * c.k * c.k * c.c_out),  // dgrad: k k C_out
                                truncation(terms * cs.n * cs.out_h() * cs.out_w()),  // wgrad
                                truncation(cs.n * cs.out_h() * cs.out_w())};         // bias
      test::expect_close_to_rms(gpu32.out, cpu32.out, 2e-5 + t_out, "output (tf32 on both)",
                                t_out);
      for (size_t k = 0; k < in.size(); ++k)
        test::expect_close_to_rms(gpu32.grads[k], cpu32.grads[k], 2e-5 + t_grads[k],
                                  "gradient of input " + std::to_string(k) + " (tf32 on both)",
                                  t_grads[k]);
    }
    set_precision(Precision::F32);
    set_conv_algorithm(ConvAlgorithm::TensorCore);
    stream += 3;
  }
  set_conv_algorithm(ConvAlgorithm::Tiled);
}

// The emulation's tensor-core sums (tests/cuda_emulation/tensor_core_sum.h) held to the bits
// an H200 gave on 2026-12-04 (docs/gpu-runs/2026-12-04/ctest-gpu.log), when the test above
// failed there and printed them: conv v3 in TF32 on the CIFAR-10 model's 4x4 convolution
// (512 -> 256 channels), the 13th of conv_cases (stream 536). The emulated kernel issues the
// H200's instructions in the H200's order on the same operands, so only the instruction's
// arithmetic can make the bits differ. Rounding to nearest, the emulation's sums before,
// gave none of them (the CPU's sums are 101-581 ulps away); the model gives all ten, and the
// 65 other elements that log printed (at eight other shapes, 48-1139 ulps from the CPU's).
// A GPU of another generation may add differently: the test asks for a Hopper (sm_90).
TEST(CudaOps, Conv2dTensorCoreSumsAreTheH200sBits) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA && !DDPM_CUDA_EMULATION
  if (cuda::compute_capability() != 90)
    GTEST_SKIP() << "the bits are a Hopper's (sm_90); this device is sm_"
                 << cuda::compute_capability();
#endif
  const Shape x{2, 4, 4, 512};
  const uint64_t stream = 536;  // 500 + 3 x the case's place in conv_cases
  const std::vector<Tensor> in = {rnd(x, stream),
                                  rnd({3, 3, 512, 256}, stream + 1, 1.0 / std::sqrt(9.0 * 512)),
                                  rnd({256}, stream + 2)};
  const auto f = [](const std::vector<Tensor>& t) {
    return conv2d(t[0], t[1], t[2], Conv2dParams::same(3));
  };
  set_conv_algorithm(ConvAlgorithm::TensorCore);
  set_precision(Precision::TF32);
  const DeviceRun gpu = run_on(Device::CUDA, f, in);
  set_precision(Precision::F32);
  set_conv_algorithm(ConvAlgorithm::Tiled);
  struct Element {
    size_t index;
    float h200;
  };
  const Element outputs[] = {{301, 0x1.06bf92p+1f}, {344, 0x1.37d81cp-1f}, {392, -0x1.3991e8p+1f},
                             {426, 0x1.3798acp+1f}, {470, -0x1.b8ab94p-1f}};
  const Element dgrads[] = {{532, 0x1.26dc96p+0f}, {611, -0x1.4a7984p+0f}, {712, -0x1.7ab35cp+0f},
                            {836, -0x1.53292cp+0f}, {875, 0x1.435978p+0f}};
  for (const Element& e : outputs) EXPECT_EQ(gpu.out.at(e.index), e.h200) << "output " << e.index;
  for (const Element& e : dgrads)
    EXPECT_EQ(gpu.grads[0].at(e.index), e.h200) << "dgrad " << e.index;
}

#if DDPM_WITH_CUDA
constexpr int64_t kPad = 64;
constexpr float kSentinel = -12345.0f;

// A GPU buffer of n values `fill` between kPad sentinels on each side.
Tensor padded(int64_t n, float fill = kSentinel) {
  std::vector<float> v(static_cast<size_t>(n + 2 * kPad), kSentinel);
  std::fill(v.begin() + kPad, v.begin() + kPad + n, fill);
  return Tensor::from_vector(Shape{n + 2 * kPad}, v, Device::CUDA);
}

void expect_sentinels(const Tensor& buf, int64_t n, const char* what) {
  const std::vector<float> v = buf.to(Device::CPU).to_vector<float>();
  for (int64_t i = 0; i < kPad; ++i) {
    ASSERT_EQ(v[i], kSentinel) << what << " wrote before its output";
    ASSERT_EQ(v[kPad + n + i], kSentinel) << what << " wrote past its output";
  }
}

// Writes a kernel makes outside its output: the output sits between 64-float sentinels.
TEST(CudaOps, KernelsStayInsideTheirOutput) {
  REQUIRE_GPU();
  const Tensor x = rnd({3, 5, 7, 65}, 1).to(Device::CUDA);
  const int64_t n = x.numel();
  Tensor out = padded(n);
  cuda::silu_forward(n, x.data<float>(), out.data<float>() + kPad);
  expect_sentinels(out, n, "silu");
  Tensor up = padded(4 * n);
  cuda::upsample_nearest2x_forward(UpsampleShape{3, 5, 7, 65}, x.data<float>(), up.data<float>() + kPad);
  expect_sentinels(up, 4 * n, "upsample");
  const Tensor gamma = rnd({65}, 2).to(Device::CUDA), beta = rnd({65}, 3).to(Device::CUDA);
  Tensor y = padded(n), mean = padded(3 * 13), rstd = padded(3 * 13);
  GroupNormShape gs;
  gs.n = 3;
  gs.s = 35;
  gs.c = 65;
  gs.groups = 13;
  cuda::group_norm_forward(gs, x.data<float>(), gamma.data<float>(), beta.data<float>(),
                           y.data<float>() + kPad, mean.data<float>() + kPad, rstd.data<float>() + kPad);
  expect_sentinels(y, n, "group_norm y");
  expect_sentinels(mean, 39, "group_norm mean");
  expect_sentinels(rstd, 39, "group_norm rstd");
  for (cuda::ConvAlgo algo : {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled,
                              cuda::ConvAlgo::TensorCore, cuda::ConvAlgo::Bf16TensorCore}) {
    Conv2dShape cs;
    cs.n = 3;
    cs.h = 5;
    cs.w = 7;
    cs.c_in = 65;
    cs.c_out = 67;
    const Tensor w = rnd({3, 3, 65, 67}, 4).to(Device::CUDA);
    Tensor y2 = padded(3 * 5 * 7 * 67), dw = padded(3 * 3 * 65 * 67), dx = padded(n);
    const int64_t ws_floats = std::max(cuda::conv2d_forward_workspace(cs, algo),
                                       cuda::conv2d_backward_workspace(cs, algo));
    const Tensor ws = Tensor::empty(Shape{std::max<int64_t>(1, ws_floats)}, DType::F32, Device::CUDA);
    cuda::conv2d_forward(cs, x.data<float>(), w.data<float>(), nullptr, y2.data<float>() + kPad,
                         algo, ws.data<float>());
    expect_sentinels(y2, 3 * 5 * 7 * 67, "conv2d forward");
    const Tensor dy = rnd({3, 5, 7, 67}, 5).to(Device::CUDA);
    cuda::conv2d_backward(cs, x.data<float>(), w.data<float>(), dy.data<float>(),
                          dx.data<float>() + kPad, dw.data<float>() + kPad, nullptr, algo,
                          ws.data<float>());
    expect_sentinels(dx, n, "conv2d dgrad");
    expect_sentinels(dw, 3 * 3 * 65 * 67, "conv2d wgrad");
  }
}

// Bias gradients and group norm's dgamma/dbeta are column sums over N*H*W rows, split into
// row chunks (column_sum.cuh). Against double sums on the CPU, with and without a workspace
// (one chunk), on row counts that leave a partial chunk, and the same bits twice. Float sums
// of up to 4,100 terms in different orders: 1e-5 of the sum of magnitudes.
TEST(CudaOps, ColumnSumsOverManyRowsMatchTheCpu) {
  REQUIRE_GPU();
  const bool small = test::small_shapes_only();
  const int64_t n = small ? 3 : 5, h = small ? 17 : 41, c = 65;  // rows 867 or 8405
  const Tensor dy = rnd({n, h, h, c}, 1);
  const std::vector<float> dyv = dy.to_vector<float>();
  const Tensor dy_gpu = dy.to(Device::CUDA);
  const int64_t rows = n * h * h;
  std::vector<double> expect(c, 0.0), magnitude(c, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) {
      expect[j] += dyv[r * c + j];
      magnitude[j] += std::fabs(dyv[r * c + j]);
    }
  const BroadcastShape bs{1, rows, c, false};
  const int64_t ws_floats = cuda::broadcast_add_backward_workspace(bs);
  ASSERT_GT(ws_floats, 0) << "rows this many should be split into chunks";
  const Tensor ws = Tensor::empty(Shape{ws_floats}, DType::F32, Device::CUDA);
  auto bias_grad = [&](bool with_workspace) {
    Tensor db = padded(c, 0.0f);
    cuda::broadcast_add_backward(bs, dy_gpu.data<float>(), db.data<float>() + kPad,
                                 with_workspace ? ws.data<float>() : nullptr);
    expect_sentinels(db, c, "bias gradient");
    const std::vector<float> all = db.to(Device::CPU).to_vector<float>();
    return std::vector<float>(all.begin() + kPad, all.begin() + kPad + c);
  };
  const std::vector<float> split = bias_grad(true), again = bias_grad(true), whole = bias_grad(false);
  EXPECT_EQ(split, again);
  for (int64_t j = 0; j < c; ++j) {
    EXPECT_NEAR(split[j], expect[j], 1e-5 * magnitude[j]) << "column " << j;
    EXPECT_NEAR(whole[j], expect[j], 1e-5 * magnitude[j]) << "column " << j;
  }
  // group norm: the same sums weighted by xhat, through the op on both devices
  expect_devices_agree(
      [](const std::vector<Tensor>& in) { return group_norm(in[0], in[1], in[2], 13, 1e-6); },
      {rnd({n, h, h, c}, 2, 2.0), rnd({c}, 3), rnd({c}, 4)}, 2e-4, 2e-4);
}

// The plan gives a batch-128 CIFAR bias gradient (131,072 rows of 128) hundreds of blocks:
// the first version ran it as 128 threads on one SM.
TEST(CudaOps, ColumnSumsUseTheWholeGpu) {
  const cuda::ColumnSumPlan p = cuda::plan_column_sums(1, 128 * 32 * 32, 128);
  EXPECT_EQ(p.chunks, cuda::kMaxRowChunks);
  EXPECT_GE(p.chunks * (128 / cuda::kColumnTile), 2 * 132) << "blocks for two waves of an H100";
  EXPECT_EQ(p.chunks * p.chunk_rows >= p.rows && (p.chunks - 1) * p.chunk_rows < p.rows, true);
}

// v2's two block tiles, 64x64 (4x4 outputs a thread) and 128x128 (8x8), give the same bits
// in all three passes: each output is the same sum over k in the same order, whichever
// thread holds it (kernels/conv2d_tiled_layout.h). So do its two walks, element by element
// and in runs (16-byte loads where the channels are a multiple of 4: 8-byte on the small
// tiles): the same values staged in the same places. Shapes with partial tiles on both
// sides (234 rows, 140 columns), a strided dgrad, a wgrad whose reduction splits (3 x 9 x
// 19 pixels, as below), and channels that allow runs in some passes only: 3 in (runs in
// the dgrad alone), 6 out (runs of 2, the small tiles', but not of 4), 6 in through a 2x2
// kernel (K = 24 is a multiple of 4, but a run of 4 channels would cross into the next tap
// on the large tiles), 3 in and 5 out (none). The bias's gradient is the same column sum
// either way. The launch counts show that each forced tile and walk is the one that ran,
// and that runs are the default. Against the CPU: the small tiles in
// Conv2dBothVersionsMatchTheCpu above, the same bits.
TEST(CudaOps, Conv2dTiledLargeAndSmallTilesAreTheSameBits) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  struct Case {
    Shape x;
    int64_t k, c_out;
    Conv2dParams p;
  };
  const Case cases[] = {{{2, 9, 13, 20}, 3, 140, Conv2dParams::same(3)},
                        {{2, 10, 12, 24}, 3, 36, Conv2dParams::downsample()},
                        {{3, 9, 19, 64}, 3, 64, Conv2dParams::same(3)},
                        {{2, 9, 13, 3}, 3, 8, Conv2dParams::same(3)},
                        {{2, 9, 13, 8}, 3, 6, Conv2dParams::same(3)},
                        {{2, 9, 13, 6}, 2, 8, Conv2dParams{1, 0, 0, 1, 1}},
                        {{2, 9, 13, 3}, 3, 5, Conv2dParams::same(3)}};
  uint64_t stream = 900;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.x.str() + " -> " + std::to_string(c.c_out));
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, c.p);
    const Shape y_shape{s.n, s.out_h(), s.out_w(), s.c_out};
    const Tensor x = rnd(c.x, stream).to(Device::CUDA);
    const Tensor w = rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, 0.1).to(Device::CUDA);
    const Tensor b = rnd({c.c_out}, stream + 2).to(Device::CUDA);
    const Tensor dy = rnd(y_shape, stream + 3).to(Device::CUDA);
    stream += 4;
    const int64_t ws_floats = std::max(cuda::conv2d_forward_workspace(s, cuda::ConvAlgo::Tiled),
                                       cuda::conv2d_backward_workspace(s, cuda::ConvAlgo::Tiled));
    const Tensor ws = Tensor::empty(Shape{std::max<int64_t>(ws_floats, 1)}, DType::F32,
                                    Device::CUDA);
    // Passes in runs of v: the forward and wgrad need both channel counts a multiple of v,
    // the dgrad (dy's and w's output channels) Cout alone.
    const auto passes_in_runs = [&](int64_t v) {
      const bool in = c.x[3] % v == 0, out = c.c_out % v == 0;
      return int64_t{in && out} + int64_t{out} + int64_t{in && out};
    };
    const auto run = [&](cuda::TiledTiles tiles, bool runs) {
      cuda::set_conv2d_tiled_tiles(tiles);
      if (!runs) cuda::set_conv2d_tiled_runs(false);  // else the default
      const Tensor y = Tensor::empty(y_shape, DType::F32, Device::CUDA);
      const Tensor dx = Tensor::full(c.x, 0.5, DType::F32).to(Device::CUDA);
      const Tensor dw = Tensor::full(w.shape(), 0.25, DType::F32).to(Device::CUDA);
      const Tensor db = Tensor::zeros(Shape{c.c_out}, DType::F32, Device::CUDA);
      cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(),
                           cuda::ConvAlgo::Tiled, ws.data<float>());
      cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(),
                            dx.data<float>(), dw.data<float>(), db.data<float>(),
                            cuda::ConvAlgo::Tiled, ws.data<float>());
      cuda::set_conv2d_tiled_tiles(cuda::TiledTiles::Heuristic);
      cuda::set_conv2d_tiled_runs(true);
      std::vector<std::vector<float>> out;
      for (const Tensor* t : {&y, &dx, &dw, &db})
        out.push_back(t->to(Device::CPU).to_vector<float>());
      return out;
    };
    const cuda::TiledLaunches before = cuda::conv2d_tiled_launches();
    const std::vector<std::vector<float>> small = run(cuda::TiledTiles::Small, true);
    const cuda::TiledLaunches between = cuda::conv2d_tiled_launches();
    const std::vector<std::vector<float>> large = run(cuda::TiledTiles::Large, true);
    const cuda::TiledLaunches after = cuda::conv2d_tiled_launches();
    EXPECT_EQ(between.small - before.small, 3) << "forward, dgrad, wgrad on the small tiles";
    EXPECT_EQ(between.large, before.large);
    EXPECT_EQ(after.large - between.large, 3) << "forward, dgrad, wgrad on the large tiles";
    EXPECT_EQ(after.small, between.small);
    EXPECT_EQ(between.runs - before.runs, passes_in_runs(2)) << "in runs of 2, small tiles";
    EXPECT_EQ(after.runs - between.runs, passes_in_runs(4)) << "in runs of 4, large tiles";
    const std::vector<std::vector<float>> small_elements = run(cuda::TiledTiles::Small, false);
    const std::vector<std::vector<float>> large_elements = run(cuda::TiledTiles::Large, false);
    EXPECT_EQ(cuda::conv2d_tiled_launches().runs, after.runs) << "runs turned off";
    const char* names[] = {"y", "dx", "dw", "db"};
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(large[i], small[i]) << names[i];
      EXPECT_EQ(small_elements[i], small[i]) << names[i] << ", small tiles element by element";
      EXPECT_EQ(large_elements[i], small[i]) << names[i] << ", large tiles element by element";
    }
  }
  // The heuristic: the large tiles where their blocks fill every SM twice over (the model's
  // 32x32 forward at batch 128: 1024 blocks), else the small ones (its 4x4 layers' 32).
  EXPECT_TRUE(cuda::conv2d_tiled_takes_large_tiles(128 * 32 * 32, 128, 1));
  EXPECT_FALSE(cuda::conv2d_tiled_takes_large_tiles(128 * 4 * 4, 256, 1));
  // The model's wgrads split (the slices read off the workspace: one plane of 9 Cin x Cout
  // partial sums a slice, then the bias gradient's) into enough slices for the large tiles,
  // at the 4x4 layer too, where the forward's 32 blocks are not enough.
  struct Layer {
    int64_t hw, c_in, c_out;
  };
  for (const Layer l : {Layer{32, 128, 128}, Layer{16, 256, 256}, Layer{8, 256, 256},
                        Layer{4, 256, 256}, Layer{32, 384, 128}}) {
    SCOPED_TRACE(std::to_string(l.hw) + "x" + std::to_string(l.hw) + " " +
                 std::to_string(l.c_in) + "->" + std::to_string(l.c_out));
    const Conv2dShape s = conv2d_shape(Shape{128, l.hw, l.hw, l.c_in},
                                       Shape{3, 3, l.c_in, l.c_out}, Conv2dParams::same(3));
    const int64_t plane = 9 * l.c_in * l.c_out;
    const int64_t planes = cuda::conv2d_backward_workspace(s, cuda::ConvAlgo::Tiled) -
                           cuda::broadcast_add_backward_workspace(
                               BroadcastShape{1, 128 * l.hw * l.hw, l.c_out, false});
    ASSERT_EQ(planes % plane, 0);
    ASSERT_GT(planes / plane, 1) << "a wgrad that does not split";
    EXPECT_TRUE(cuda::conv2d_tiled_takes_large_tiles(9 * l.c_in, l.c_out,
                                                     static_cast<int>(planes / plane)));
  }
#endif
}

// v2 walks a tile in runs only from aligned memory: operands 4 bytes off their 16-byte
// alignment (views into a larger buffer, one float in) are staged element by element, with
// the same bits as aligned copies staged in runs. A float4 load from such an address is
// undefined behaviour, which the emulation's UBSan reports.
TEST(CudaOps, Conv2dTiledWalksInRunsOnlyFromAlignedMemory) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  const Conv2dShape s =
      conv2d_shape(Shape{2, 6, 7, 8}, Shape{3, 3, 8, 12}, Conv2dParams::same(3));
  const int64_t x_n = s.n * s.h * s.w * s.c_in, w_n = 9 * s.c_in * s.c_out;
  const int64_t y_n = s.n * s.out_h() * s.out_w() * s.c_out;
  // each operand one float into a larger buffer, and again on its own
  const auto operands = [](int64_t n, uint64_t stream) {
    const std::vector<float> v = rnd({n + 1}, stream).to_vector<float>();
    return std::make_pair(Tensor::from_vector(Shape{n + 1}, v).to(Device::CUDA),
                          Tensor::from_vector(Shape{n}, std::vector<float>(v.begin() + 1, v.end()))
                              .to(Device::CUDA));
  };
  const auto [x, x_aligned] = operands(x_n, 950);
  const auto [w, w_aligned] = operands(w_n, 951);
  const auto forward = [&](const float* xp, const float* wp) {
    const Tensor y = Tensor::empty(Shape{y_n}, DType::F32, Device::CUDA);
    cuda::conv2d_forward(s, xp, wp, nullptr, y.data<float>(), cuda::ConvAlgo::Tiled, nullptr);
    return y.to(Device::CPU).to_vector<float>();
  };
  const cuda::TiledLaunches before = cuda::conv2d_tiled_launches();
  const std::vector<float> off = forward(x.data<float>() + 1, w.data<float>() + 1);
  const cuda::TiledLaunches between = cuda::conv2d_tiled_launches();
  const std::vector<float> aligned = forward(x_aligned.data<float>(), w_aligned.data<float>());
  const cuda::TiledLaunches after = cuda::conv2d_tiled_launches();
  EXPECT_EQ(between.runs, before.runs) << "runs from memory 4 bytes off alignment";
  EXPECT_EQ(after.runs - between.runs, 1) << "the aligned copies in runs";
  EXPECT_EQ(off, aligned);
#endif
}

// The tiled and tensor-core wgrads with a workspace split their reduction (N*OH*OW = 8192
// terms here; 512 with small shapes) into slices summed in slice order: the same values as
// the unsplit kernel up to float summation order (1e-4 relative; TF32's rounding is the same
// in both, only the order of the fp32 accumulation differs), a sentinel-clean output, and
// the same bits twice. Both add to an earlier gradient (0.5 everywhere), as the tape asks of
// a weight's later contributions. The second shape's 3 x 9 x 19 = 513 terms cut into two
// slices of 272 (K / 2 rounded up to whole 16-term steps): the last slice is short, and
// rounding K / 2 down instead (256 a slice) would drop the 513th term.
TEST(CudaOps, Conv2dWgradSplitKMatchesUnsplit) {
  REQUIRE_GPU();
  const bool small = test::small_shapes_only();
  const int64_t n = small ? 2 : 8, hw = small ? 16 : 32, ch = small ? 64 : 128;
  struct Case {
    int64_t n, h, w, ch;
  };
  for (const Case& c : {Case{n, hw, hw, ch}, Case{3, 9, 19, 64}}) {
    SCOPED_TRACE(std::to_string(c.n) + "x" + std::to_string(c.h) + "x" + std::to_string(c.w));
    Conv2dShape cs;
    cs.n = c.n;
    cs.h = c.h;
    cs.w = c.w;
    cs.c_in = cs.c_out = c.ch;
    cs.pad_top = cs.pad_left = cs.pad_bottom = cs.pad_right = 1;
    const Tensor x = rnd({c.n, c.h, c.w, c.ch}, 1).to(Device::CUDA);
    const Tensor w = rnd({3, 3, c.ch, c.ch}, 2, 0.05).to(Device::CUDA);
    const Tensor dy = rnd({c.n, c.h, c.w, c.ch}, 3).to(Device::CUDA);
    const int64_t count = 3 * 3 * c.ch * c.ch;
    for (cuda::ConvAlgo algo : {cuda::ConvAlgo::Tiled, cuda::ConvAlgo::TensorCore}) {
      SCOPED_TRACE(algo == cuda::ConvAlgo::Tiled ? "tiled" : "tensor cores");
      const int64_t ws_floats = cuda::conv2d_backward_workspace(cs, algo);
      const int64_t bias_floats = cuda::broadcast_add_backward_workspace(
          BroadcastShape{1, c.n * c.h * c.w, c.ch, false});
      ASSERT_GT(ws_floats, bias_floats) << "this shape should split (few output tiles, a long reduction)";
      const Tensor ws = Tensor::empty(Shape{ws_floats}, DType::F32, Device::CUDA);
      auto wgrad = [&](bool split) {
        Tensor dw = padded(count, 0.5f);  // wgrad accumulates: onto an earlier gradient
        cuda::conv2d_backward(cs, x.data<float>(), w.data<float>(), dy.data<float>(), nullptr,
                              dw.data<float>() + kPad, nullptr, algo,
                              split ? ws.data<float>() : nullptr);
        expect_sentinels(dw, count, split ? "split wgrad" : "wgrad");
        const std::vector<float> all = dw.to(Device::CPU).to_vector<float>();
        return std::vector<float>(all.begin() + kPad, all.begin() + kPad + count);
      };
      const std::vector<float> plain = wgrad(false), split = wgrad(true), again = wgrad(true);
      EXPECT_EQ(split, again);
      std::vector<double> p(plain.begin(), plain.end()), q(split.begin(), split.end());
      double scale = 0;
      for (double v : p) scale = std::max(scale, std::fabs(v));
      for (size_t i = 0; i < p.size(); ++i)
        ASSERT_NEAR(q[i], p[i], 1e-4 * scale) << "element " << i;
    }
  }
}

// ---- first gradients written outright (kernels/grad_write.h) ------------------------------

// A GPU buffer of n NaNs (f32 or bf16): what a kernel told to write a gradient outright
// must not read.
Tensor nans(int64_t n, DType dtype = DType::F32) {
  return Tensor::from_vector(Shape{n}, std::vector<float>(static_cast<size_t>(n), NAN))
      .to(dtype)
      .to(Device::CUDA);
}
Tensor on_gpu_as_bf16(const Tensor& cpu) { return cpu.to(DType::BF16).to(Device::CUDA); }
uint16_t* bits(const Tensor& t) { return reinterpret_cast<uint16_t*>(t.raw()); }
std::vector<float> as_floats(const Tensor& t) {  // exact for bf16; NaN equals nothing
  return t.to(Device::CPU).to(DType::F32).to_vector<float>();
}

// run(out, write) into n zeros of dtype with GradWrite::Accumulate and into n NaNs with
// Assign: the same values, so every element is written and none is read.
template <class Run>
void expect_written_as_added(int64_t n, DType dtype, Run run) {
  const Tensor added = Tensor::zeros(Shape{n}, dtype, Device::CUDA), written = nans(n, dtype);
  run(added, GradWrite::Accumulate);
  run(written, GradWrite::Assign);
  EXPECT_EQ(as_floats(written), as_floats(added));
}

// dx written outright (GradWrite::Assign) into a buffer of NaNs is, bit for bit, dx added
// into zeros (and the convolutions' dw likewise), for every convolution algo, group norm and
// linear, f32 and bf16 activations: so every element is written and none is read. Shapes:
// odd channels (v4 and cuDNN pad), and a stride-2 TF-'SAME' convolution (cuDNN stages x and
// crops its gradient back onto dx).
TEST(CudaOps, FirstGradientsAreWrittenOutright) {
  REQUIRE_GPU();
  for (const Conv2dParams& p : {Conv2dParams::same(3), Conv2dParams{2, 0, 1, 0, 1}}) {
    const Conv2dShape s = conv2d_shape(Shape{2, 6, 7, 5}, Shape{3, 3, 5, 9}, p);
    const int64_t nx = s.n * s.h * s.w * s.c_in;
    const Tensor x_cpu = rnd({s.n, s.h, s.w, s.c_in}, 1);
    const Tensor dy_cpu = rnd({s.n, s.out_h(), s.out_w(), s.c_out}, 3);
    const Tensor x = x_cpu.to(Device::CUDA), dy = dy_cpu.to(Device::CUDA);
    const Tensor w = rnd({3, 3, s.c_in, s.c_out}, 2, 0.3).to(Device::CUDA);
    const Tensor x16 = on_gpu_as_bf16(x_cpu), dy16 = on_gpu_as_bf16(dy_cpu);
    for (cuda::ConvAlgo algo :
         {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled, cuda::ConvAlgo::TensorCore,
          cuda::ConvAlgo::Bf16TensorCore, cuda::ConvAlgo::Cudnn, cuda::ConvAlgo::CudnnTf32,
          cuda::ConvAlgo::CudnnBf16}) {
      SCOPED_TRACE(std::string(cuda::conv_algo_name(algo)) + (p.stride == 2 ? ", stride 2" : ""));
      const Tensor ws = Tensor::empty(
          Shape{std::max<int64_t>(1, cuda::conv2d_backward_workspace(s, algo))}, DType::F32,
          Device::CUDA);
      float* const wsp = ws.data<float>();
      expect_written_as_added(nx, DType::F32, [&](const Tensor& dx, GradWrite write) {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(),
                              dx.data<float>(), nullptr, nullptr, algo, wsp, nullptr, write);
      });
      // dw likewise (dw_write: the folded kernels of upsample_conv3x3, whose gradients are
      // new at every step), with the v4 wgrad's padded channels (Cin 5, Cout 9) dropped
      const int64_t nw = 9 * s.c_in * s.c_out;
      expect_written_as_added(nw, DType::F32, [&](const Tensor& dw, GradWrite write) {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(), nullptr,
                              dw.data<float>(), nullptr, algo, wsp, nullptr,
                              GradWrite::Accumulate, write);
      });
      if (!cuda::conv2d_reads_bf16(algo)) continue;
      expect_written_as_added(nx, DType::BF16, [&](const Tensor& dx, GradWrite write) {
        cuda::conv2d_backward(s, bits(x16), w.data<float>(), bits(dy16), bits(dx), nullptr,
                              nullptr, algo, wsp, nullptr, write);
      });
      expect_written_as_added(nw, DType::F32, [&](const Tensor& dw, GradWrite write) {
        cuda::conv2d_backward(s, bits(x16), w.data<float>(), bits(dy16), nullptr,
                              dw.data<float>(), nullptr, algo, wsp, nullptr,
                              GradWrite::Accumulate, write);
      });
    }
  }
  GroupNormShape gs;
  gs.n = 3;
  gs.s = 35;
  gs.c = 65;
  gs.groups = 13;
  const int64_t n = gs.n * gs.s * gs.c;
  const Tensor x_cpu = rnd({n}, 4), dy_cpu = rnd({n}, 5);
  const Tensor x = x_cpu.to(Device::CUDA), dy = dy_cpu.to(Device::CUDA);
  const Tensor gamma = rnd({65}, 6).to(Device::CUDA), beta = rnd({65}, 7).to(Device::CUDA);
  const Tensor y = Tensor::empty(Shape{n}, DType::F32, Device::CUDA);
  const Tensor mean = Tensor::empty(Shape{39}, DType::F32, Device::CUDA), rstd = mean.clone();
  cuda::group_norm_forward(gs, x.data<float>(), gamma.data<float>(), beta.data<float>(),
                           y.data<float>(), mean.data<float>(), rstd.data<float>());
  const Tensor added = Tensor::zeros(Shape{n}, DType::F32, Device::CUDA), written = nans(n);
  cuda::group_norm_backward(gs, x.data<float>(), gamma.data<float>(), mean.data<float>(),
                            rstd.data<float>(), dy.data<float>(), added.data<float>(), nullptr,
                            nullptr);
  cuda::group_norm_backward(gs, x.data<float>(), gamma.data<float>(), mean.data<float>(),
                            rstd.data<float>(), dy.data<float>(), written.data<float>(), nullptr,
                            nullptr, nullptr, GradWrite::Assign);
  EXPECT_EQ(written.to(Device::CPU).to_vector<float>(), added.to(Device::CPU).to_vector<float>());
  const Tensor x16 = on_gpu_as_bf16(x_cpu), dy16 = on_gpu_as_bf16(dy_cpu);
  const Tensor added16 = Tensor::zeros(Shape{n}, DType::BF16, Device::CUDA),
               written16 = nans(n, DType::BF16);
  cuda::group_norm_backward_bf16(gs, bits(x16), gamma.data<float>(), mean.data<float>(),
                                 rstd.data<float>(), bits(dy16), bits(added16), nullptr, nullptr);
  cuda::group_norm_backward_bf16(gs, bits(x16), gamma.data<float>(), mean.data<float>(),
                                 rstd.data<float>(), bits(dy16), bits(written16), nullptr,
                                 nullptr, nullptr, GradWrite::Assign);
  EXPECT_EQ(as_floats(written16), as_floats(added16));
  // linear's dx: cuBLAS with beta 0 (fp32, and bf16 operands), and the bf16 activations'
  // rounding pass
  const LinearShape ls{6, 5, 7};  // x (6, 5), w (5, 7)
  const Tensor lx_cpu = rnd({6, 5}, 8), ldy_cpu = rnd({6, 7}, 9);
  const Tensor lx = lx_cpu.to(Device::CUDA), ldy = ldy_cpu.to(Device::CUDA);
  const Tensor lw = rnd({5, 7}, 10).to(Device::CUDA);
  const Tensor lws = Tensor::empty(Shape{cuda::linear_bf16_backward_workspace(ls) +
                                         cuda::linear_bf16_activations_backward_workspace(ls)},
                                   DType::F32, Device::CUDA);
  for (bool bf16 : {false, true}) {
    const Tensor ladded = Tensor::zeros(Shape{30}, DType::F32, Device::CUDA), lwritten = nans(30);
    for (const Tensor* dx : {&ladded, &lwritten}) {
      const GradWrite write = dx == &ladded ? GradWrite::Accumulate : GradWrite::Assign;
      if (bf16)
        cuda::linear_bf16_backward(ls, lx.data<float>(), lw.data<float>(), ldy.data<float>(),
                                   dx->data<float>(), nullptr, nullptr, lws.data<float>(),
                                   nullptr, write);
      else
        cuda::linear_backward(ls, lx.data<float>(), lw.data<float>(), ldy.data<float>(),
                              dx->data<float>(), nullptr, nullptr, nullptr, false, write);
    }
    EXPECT_EQ(as_floats(lwritten), as_floats(ladded)) << (bf16 ? "bf16 operands" : "fp32");
  }
  const Tensor lx16 = on_gpu_as_bf16(lx_cpu), ldy16 = on_gpu_as_bf16(ldy_cpu);
  const Tensor ladded16 = Tensor::zeros(Shape{30}, DType::BF16, Device::CUDA),
               lwritten16 = nans(30, DType::BF16);
  cuda::linear_bf16_backward(ls, bits(lx16), lw.data<float>(), bits(ldy16), bits(ladded16),
                             nullptr, nullptr, lws.data<float>());
  cuda::linear_bf16_backward(ls, bits(lx16), lw.data<float>(), bits(ldy16), bits(lwritten16),
                             nullptr, nullptr, lws.data<float>(), nullptr, GradWrite::Assign);
  EXPECT_EQ(as_floats(lwritten16), as_floats(ladded16)) << "bf16 activations";
}

// The same for the rest of the training step's backward kernels: attention's dqkv (each
// version: straightforward, fused, flash on f32 and on bf16 tensors), the upsample's dx (f32,
// bf16), SiLU's dx, and the time embedding's per-sample sums (f32 and bf16 dy, in one chunk
// and in several). Written into NaNs is, bit for bit, added into zeros. Partial tiles: L = 37.
TEST(CudaOps, EveryActivationGradientKernelWritesAFirstGradientOutright) {
  REQUIRE_GPU();
  using Run = std::function<void(const Tensor& dst, GradWrite write)>;
  const auto expect_written_is_added = [](int64_t n, DType dtype, const Run& run,
                                          const std::string& what) {
    const Tensor added = Tensor::zeros(Shape{n}, dtype, Device::CUDA), written = nans(n, dtype);
    run(added, GradWrite::Accumulate);
    run(written, GradWrite::Assign);
    EXPECT_EQ(as_floats(written), as_floats(added)) << what;
  };
  AttentionShape as;
  as.b = 2, as.l = 37, as.c = 64, as.heads = 2;  // head dim 32
  const int64_t nqkv = as.b * as.l * 3 * as.c, nout = as.b * as.l * as.c;
  const Tensor qkv_cpu = rnd({nqkv}, 20, 0.5), dout_cpu = rnd({nout}, 21);
  const Tensor qkv = qkv_cpu.to(Device::CUDA), dout = dout_cpu.to(Device::CUDA);
  const Tensor out = Tensor::empty(Shape{nout}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{as.b * as.heads * as.l}, DType::F32, Device::CUDA);
  const Tensor delta = lse.clone();
  const Tensor ws = Tensor::empty(Shape{2 * as.b * as.heads * as.l * as.l}, DType::F32,
                                  Device::CUDA);
  cuda::attention_fused_forward(as, qkv.data<float>(), out.data<float>(), lse.data<float>());
  expect_written_is_added(nqkv, DType::F32, [&](const Tensor& dqkv, GradWrite write) {
    cuda::attention_backward(as, qkv.data<float>(), lse.data<float>(), dout.data<float>(),
                             dqkv.data<float>(), ws.data<float>(), write);
  }, "attention, straightforward");
  expect_written_is_added(nqkv, DType::F32, [&](const Tensor& dqkv, GradWrite write) {
    cuda::attention_fused_backward(as, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                                   dout.data<float>(), dqkv.data<float>(), delta.data<float>(),
                                   write);
  }, "attention, fused");
  as.bf16_probs = true;
  cuda::attention_flash_bf16_forward(as, qkv.data<float>(), out.data<float>(), lse.data<float>());
  expect_written_is_added(nqkv, DType::F32, [&](const Tensor& dqkv, GradWrite write) {
    cuda::attention_flash_bf16_backward(as, qkv.data<float>(), out.data<float>(),
                                        lse.data<float>(), dout.data<float>(),
                                        dqkv.data<float>(), delta.data<float>(), write);
  }, "attention, flash on f32 tensors");
  const Tensor qkv16 = on_gpu_as_bf16(qkv_cpu), dout16 = on_gpu_as_bf16(dout_cpu);
  const Tensor out16 = Tensor::empty(Shape{nout}, DType::BF16, Device::CUDA);
  cuda::attention_flash_bf16_forward(as, bits(qkv16), bits(out16), lse.data<float>());
  expect_written_is_added(nqkv, DType::BF16, [&](const Tensor& dqkv, GradWrite write) {
    cuda::attention_flash_bf16_backward(as, bits(qkv16), bits(out16), lse.data<float>(),
                                        bits(dout16), bits(dqkv), delta.data<float>(), write);
  }, "attention, flash on bf16 tensors");

  const UpsampleShape us{2, 3, 5, 7};
  const int64_t nx = us.n * us.h * us.w * us.c;
  const Tensor dy_cpu = rnd({4 * nx}, 22);
  const Tensor dy = dy_cpu.to(Device::CUDA), dy16 = on_gpu_as_bf16(dy_cpu);
  expect_written_is_added(nx, DType::F32, [&](const Tensor& dx, GradWrite write) {
    cuda::upsample_nearest2x_backward(us, dy.data<float>(), dx.data<float>(), write);
  }, "upsample, f32");
  expect_written_is_added(nx, DType::BF16, [&](const Tensor& dx, GradWrite write) {
    cuda::upsample_nearest2x_backward(us, bits(dy16), bits(dx), write);
  }, "upsample, bf16");
  const Tensor x = rnd({4 * nx}, 23, 2.0).to(Device::CUDA);
  expect_written_is_added(4 * nx, DType::F32, [&](const Tensor& dx, GradWrite write) {
    cuda::silu_backward(4 * nx, x.data<float>(), dy.data<float>(), dx.data<float>(), write);
  }, "silu");

  // dy (3, 70, 9) summed per sample: 70 rows are two chunks with a workspace, one without
  const BroadcastShape bs{3, 70, 9, true};
  ASSERT_GT(cuda::plan_column_sums(3, 70, 9).chunks, 1);
  const Tensor bdy_cpu = rnd({3 * 70 * 9}, 24);
  const Tensor bdy = bdy_cpu.to(Device::CUDA), bdy16 = on_gpu_as_bf16(bdy_cpu);
  const Tensor bws = Tensor::empty(Shape{cuda::broadcast_add_backward_workspace(bs)},
                                   DType::F32, Device::CUDA);
  for (float* workspace : {static_cast<float*>(nullptr), bws.data<float>()}) {
    const std::string chunks = workspace ? ", several chunks" : ", one chunk";
    expect_written_is_added(27, DType::F32, [&](const Tensor& dv, GradWrite write) {
      cuda::broadcast_add_backward(bs, bdy.data<float>(), dv.data<float>(), workspace, write);
    }, "per-sample sums of f32" + chunks);
    expect_written_is_added(27, DType::F32, [&](const Tensor& dv, GradWrite write) {
      cuda::broadcast_add_backward(bs, bits(bdy16), dv.data<float>(), workspace, write);
    }, "per-sample sums of bf16" + chunks);
  }
}

// A ResBlock-like chain's backward, y = conv(gn_silu(x)) + b + x, zero-fills no activation
// gradient on the GPU: the convolution writes gn_silu's output gradient outright, the
// residual hands y's gradient over to x, and group norm adds onto it. Before, each of the
// two gradients was a memset and an add onto its zeros. The gradient is still the CPU's.
TEST(CudaOps, BackwardZeroFillsNoActivationGradient) {
  REQUIRE_GPU();
  const Conv2dParams p = Conv2dParams::same(3);
  const std::vector<Tensor> cpu_inputs = {rnd({2, 5, 6, 8}, 10), rnd({8}, 11), rnd({8}, 12),
                                          rnd({3, 3, 8, 8}, 13, 0.2), rnd({8}, 14)};
  const Tensor seed = rnd({2, 5, 6, 8}, 15);
  std::vector<std::vector<float>> dx;
  for (Device d : {Device::CPU, Device::CUDA}) {
    std::vector<Tensor> in;
    for (const Tensor& t : cpu_inputs) in.push_back(t.clone().to(d));
    in[0].set_requires_grad(true);  // only x: no parameter gradient to zero-fill either
    const Tensor h = group_norm_silu(in[0], in[1], in[2], 4);
    const Tensor y = conv2d_add(h, in[3], in[4], p, Tensor(), in[0]);
    const DeviceWorkCounts before = device_work_counts();
    tape().backward(y, seed.to(d));
    if (d == Device::CUDA) {
      EXPECT_EQ((device_work_counts() - before).memsets, 0u);
    }
    dx.push_back(in[0].grad().to(Device::CPU).to_vector<float>());
  }
  expect_close(dx[1], dx[0], 2e-4, 2e-4, "dx");
}

// The autotuners' guard (kernels/cuda/autotune_check.cuh), with candidates of the test's
// own: each copies a prepared output into the buffer. The reference's, one within the bound
// (an error of 1e-3 of the largest value), one off by 0.15 of it at one element, one that
// leaves an element unwritten and one that writes a NaN: only the first two are timed and
// may be chosen, and the line says why each other one is not. Then: an error confined to a
// column group is measured against that group's largest value, not the output's; under
// Compare::Bits one bit is a difference; bf16 outputs are read as bf16; and a reference
// whose output is not finite (a NaN, an infinity) is kept alone, untimed.
TEST(CudaOps, AutotunersTimeOnlyCandidatesThatComputeTheReferencesOutput) {
  REQUIRE_GPU();
  namespace at = cuda::autotune;
  constexpr int64_t kN = 384;  // 12 warps' elements, over 2 blocks
  std::vector<float> want(kN);
  for (int64_t i = 0; i < kN; ++i) want[i] = (i % 2 ? -1.0f : 1.0f) * (1.0f + 0.1f * i);
  const float largest = 1.0f + 0.1f * (kN - 1);
  std::vector<std::vector<float>> variants(6, want);
  variants[1][5] += 1e-3f * largest;
  variants[2][300] += 0.15f * largest;
  variants[4][100] = std::nanf("");
  variants[5][50] = INFINITY;  // for the reference below
  test::OnDevice<float> out(static_cast<size_t>(kN));
  const auto copy = [&](const std::vector<float>& v, int64_t from, int64_t to) {
    CUDA_CHECK(cudaMemcpyAsync(out.ptr + from, v.data() + from, (to - from) * sizeof(float),
                               cudaMemcpyHostToDevice, engine_stream()));
  };
  const auto run = [&](size_t i) {  // candidate 3 leaves element 200 as it found it
    if (i == 3) {
      copy(variants[3], 0, 200);
      copy(variants[3], 201, kN);
    } else {
      copy(variants[i], 0, kN);
    }
  };
  {
    const at::Check check({{out.ptr, kN, at::Compare::F32}});
    testing::internal::CaptureStdout();
    const std::vector<at::Timing> t = at::check_and_time(5, check, at::kSameSumsBound, run);
    const size_t pick =
        at::print_and_pick({"ref", "near", "off", "unwritten", "nan"}, t, at::kSameSumsBound);
    const std::string line = testing::internal::GetCapturedStdout();
    ASSERT_EQ(t.size(), 5u);
    EXPECT_TRUE(t[0].kept && t[1].kept) << line;
    EXPECT_FALSE(t[2].kept || t[3].kept || t[4].kept) << line;
    EXPECT_EQ(t[0].error, 0.0);
    EXPECT_NEAR(t[1].error, 1e-3, 1e-4);
    EXPECT_NEAR(t[2].error, 0.15, 1e-3);
    EXPECT_TRUE(std::isinf(t[3].error) && std::isinf(t[4].error));
    EXPECT_LE(pick, 1u) << line;
    EXPECT_NE(line.find(" off left out (error 0.15 of the largest value, bound 0.031)"),
              std::string::npos) << line;
    EXPECT_NE(line.find(" ms (off by 1.0e-03 of the largest), off "), std::string::npos) << line;
    EXPECT_EQ(line.find(" ms (off by 0"), std::string::npos) << line;  // the reference's
    for (const char* name : {" unwritten left out (its output is not finite",
                             " nan left out (its output is not finite"})
      EXPECT_NE(line.find(name), std::string::npos) << line;
    EXPECT_NE(line.find(pick == 0 ? " -> ref\n" : " -> near\n"), std::string::npos) << line;
  }
  {  // rows of 6 in 3 groups: the first group's values are 1e-3, the others' about 1
    std::vector<float> grouped(kN);
    for (int64_t i = 0; i < kN; ++i) grouped[i] = i % 6 < 2 ? 1e-3f : 1.0f + 0.01f * i;
    std::vector<float> small_off = grouped;
    small_off[6 * 50] += 1e-4f;  // 0.1 of its group's largest value, 1e-4 of the output's
    const test::OnDevice<float> a(grouped), b(small_off);
    for (int groups : {1, 3}) {
      SCOPED_TRACE(groups);
      test::OnDevice<float> buffer(grouped);
      const at::Check check({{buffer.ptr, kN, at::Compare::F32, 6, groups}});
      check.keep_as_reference();
      CUDA_CHECK(cudaMemcpy(buffer.ptr, b.ptr, kN * sizeof(float), cudaMemcpyDeviceToDevice));
      EXPECT_NEAR(check.error(), groups == 1 ? 1e-4 / (1.0 + 0.01 * (kN - 1)) : 0.1, 1e-5);
    }
  }
  {  // bits: one ulp is a difference; the same bits are none
    std::vector<float> one_ulp = want;
    one_ulp[290] = std::nextafter(one_ulp[290], 100.0f);
    test::OnDevice<float> buffer(want);
    const test::OnDevice<float> same(want), differs(one_ulp);
    const at::Check check({{buffer.ptr, kN, at::Compare::Bits}});
    check.keep_as_reference();
    EXPECT_EQ(check.error(), 0.0);
    CUDA_CHECK(cudaMemcpy(buffer.ptr, differs.ptr, kN * sizeof(float), cudaMemcpyDeviceToDevice));
    EXPECT_TRUE(std::isinf(check.error()));
  }
  {  // bf16: the elements are 16 bits; 2.0 against 2.5 at one of them is 0.2 of the largest
    std::vector<uint16_t> bits(kN, bf16_bits_from_float(2.5f));
    test::OnDevice<uint16_t> buffer(bits);
    bits[kN - 1] = bf16_bits_from_float(2.0f);
    const test::OnDevice<uint16_t> other(bits);
    const at::Check check({{buffer.ptr, kN, at::Compare::Bf16}});
    check.keep_as_reference();
    CUDA_CHECK(cudaMemcpy(buffer.ptr, other.ptr, kN * sizeof(uint16_t), cudaMemcpyDeviceToDevice));
    EXPECT_DOUBLE_EQ(check.error(), 0.2);
  }
  for (size_t not_finite : {4, 5}) {  // a reference with a NaN, or an infinity: it alone
    SCOPED_TRACE(not_finite);
    const at::Check check({{out.ptr, kN, at::Compare::F32}});
    testing::internal::CaptureStdout();
    const std::vector<at::Timing> t = at::check_and_time(
        2, check, at::kSameSumsBound, [&](size_t i) { run(i == 0 ? not_finite : 0); });
    const size_t pick = at::print_and_pick({"ref", "fine"}, t, at::kSameSumsBound);
    const std::string line = testing::internal::GetCapturedStdout();
    EXPECT_EQ(pick, 0u);
    EXPECT_TRUE(t[0].kept);
    EXPECT_FALSE(t[1].kept);
    EXPECT_NE(line.find(" ref kept untimed (its output is not finite"), std::string::npos) << line;
  }
}
#endif

}  // namespace
}  // namespace ddpm
