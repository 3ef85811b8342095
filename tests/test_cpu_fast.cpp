// The fast CPU kernels (kernels/cpu_fast: oneDNN convolutions, linear layers and attention
// products on oneDNN's sgemm, or OpenBLAS's) against the reference kernels they stand beside: the same f32 inputs
// through each, outputs and every gradient compared, on awkward shapes and the CIFAR-10
// model's shapes; the whole tiny U-Net's step; determinism; f64 staying on the reference.
// Skips, saying why, in a build without oneDNN and OpenBLAS.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "kernels/cpu_fast/fast_exp.h"
#include "models/unet/image_train.h"
#include "tests/gradcheck.h"
#include "tests/conv_cases.h"
#include "tests/test_util.h"

#if DDPM_WITH_CPU_FAST
#include <omp.h>

#include "kernels/cpu/optim.h"
#include "kernels/cpu_fast/conv2d.h"
#include "kernels/cpu_fast/gemm.h"
#include "kernels/cpu_fast/group_norm.h"
#include "kernels/cpu_fast/vector_ops.h"
#endif

namespace ddpm {
namespace {

using test::ConvCase;
using test::conv_cases;

#define REQUIRE_FAST() \
  if (!cpu_fast_kernels_built()) GTEST_SKIP() << "built without oneDNN and OpenBLAS"

using Kernels = test::UseCpuKernels;

struct KernelRun {
  std::vector<float> out;
  std::vector<std::vector<float>> grads;
};

// The gradient of sum(f(x) * r) with respect to each input; with `earlier`, of
// sum(f(x) * r) + test::earlier_gradient_terms(x), whose backward runs first: f's backward
// then adds to a gradient already there (GradWrite::Accumulate) instead of writing it.
KernelRun run(CpuKernels k, const test::TensorFn& f, const std::vector<Tensor>& inputs,
              bool earlier = false) {
  Kernels use(k);
  std::vector<Tensor> in;
  for (const Tensor& x : inputs) {
    Tensor c = x.clone();
    c.set_requires_grad(true);
    in.push_back(c);
  }
  const Tensor y = f(in);
  const Tensor loss = sum(mul(y, test::random_tensor(y.shape(), 999, DType::F32)));
  backward(earlier ? add(loss, test::earlier_gradient_terms(in, DType::F32)) : loss);
  KernelRun r{y.to_vector<float>(), {}};
  for (const Tensor& x : in) r.grads.push_back(x.grad().to_vector<float>());
  return r;
}

void expect_close(const std::vector<float>& fast, const std::vector<float>& ref, double atol,
                  double rtol, const std::string& what) {
  test::expect_close(fast, ref, atol, rtol, what, "fast", "reference");
}

void expect_kernels_agree(const test::TensorFn& f, const std::vector<Tensor>& inputs, double atol,
                          double rtol) {
  for (const bool earlier : {false, true}) {
    SCOPED_TRACE(earlier ? "added to an earlier gradient" : "the first gradient");
    const KernelRun ref = run(CpuKernels::Reference, f, inputs, earlier),
                    fast = run(CpuKernels::Fast, f, inputs, earlier);
    expect_close(fast.out, ref.out, atol, rtol, "output");
    for (size_t k = 0; k < inputs.size(); ++k)
      expect_close(fast.grads[k], ref.grads[k], atol, rtol,
                   "gradient of input " + std::to_string(k));
  }
}

Tensor rnd(const Shape& s, uint64_t stream, double scale = 1.0) {
  return test::random_tensor(s, stream, DType::F32, scale);
}

// The vectorisable exp of softmax and SiLU: within 2 ulp-ish (2.5e-7 relative) of the exact
// value over the whole range it does not clamp, clamped outside it, NaN kept.
TEST(CpuFast, FastExpIsAccurateOverTheFloatRange) {
  double worst = 0;
  for (float x = -87.0f; x < 88.0f; x += 0.00731f) {
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(cpu_fast::fast_exp(x) - exact) / exact);
  }
  EXPECT_LT(worst, 2.5e-7);
  for (float x : {0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 10.0f, -10.0f})
    EXPECT_NEAR(cpu_fast::fast_exp(x), std::exp(x), 2.5e-7 * std::exp(x)) << x;
  EXPECT_EQ(cpu_fast::fast_exp(0.0f), 1.0f);
  EXPECT_GT(cpu_fast::fast_exp(-1000.0f), 0.0f);  // clamped at 2^-126, not 0 or denormal
  EXPECT_LT(cpu_fast::fast_exp(-1000.0f), 1.3e-38f);
  EXPECT_TRUE(std::isfinite(cpu_fast::fast_exp(1000.0f)));
  EXPECT_GT(cpu_fast::fast_exp(1000.0f), 1e38f);
  EXPECT_TRUE(std::isnan(cpu_fast::fast_exp(std::nanf(""))));
}

// The shared convolution cases (tests/conv_cases.h). Float sums of up to K = 9 * 384 = 3456
// terms (forward, dgrad) or N*H*W = 2048 (wgrad) in different orders, one side with FMA:
// ~sqrt(K) 6e-8 relative typically; 2e-4 leaves room for unlucky cancellation, and a wrong
// tap or channel is off by the whole value.
TEST(CpuFast, ConvolutionsMatchTheReference) {
  REQUIRE_FAST();
  uint64_t stream = 100;
  for (const ConvCase& c : conv_cases()) {
    SCOPED_TRACE(c.x.str() + " k" + std::to_string(c.k) + " -> " + std::to_string(c.c_out));
    const Conv2dParams p = c.p;
    const double wscale = 1.0 / std::sqrt(double(c.k * c.k * c.x[3]));
    expect_kernels_agree(
        [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); },
        {rnd(c.x, stream), rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, wscale),
         rnd({c.c_out}, stream + 2)},
        2e-4, 2e-4);
    stream += 3;
  }
}

#if DDPM_WITH_CPU_FAST
// The GEMM library for a scope, restored however the test ends.
struct GemmLibraryScope {
  explicit GemmLibraryScope(cpu_fast::GemmLibrary library) : before(cpu_fast::gemm_library()) {
    cpu_fast::set_gemm_library(library);
  }
  ~GemmLibraryScope() { cpu_fast::set_gemm_library(before); }
  cpu_fast::GemmLibrary before;
};
// Runs check() on each GEMM library of the fast path: oneDNN's (its own) and OpenBLAS's.
template <class Check>
void on_each_gemm_library(Check check) {
  for (cpu_fast::GemmLibrary library :
       {cpu_fast::GemmLibrary::OneDnn, cpu_fast::GemmLibrary::OpenBlas}) {
    const GemmLibraryScope scope(library);
    SCOPED_TRACE(library == cpu_fast::GemmLibrary::OneDnn ? "oneDNN's sgemm"
                                                          : "OpenBLAS's sgemm");
    check();
  }
}

// n values uniform in [-1, 1) from `seed`.
std::vector<float> uniforms(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}
#endif

// cpu_fast::sgemm on both libraries, in the four layouts of its operands, row-major with
// leading dimensions longer than the rows (the attention reads q, k and v in place, 3C
// apart): C = alpha op(A) op(B) + beta C against a double loop, the columns of C past n
// untouched, and with beta 0 a C of NaNs overwritten, not read. K = 37: fp32 sums of 37
// products of values in [-1, 1], within 1e-5 of the exact ones.
TEST(CpuFast, TheGemmIsTheRowMajorProductInEveryLayout) {
  REQUIRE_FAST();
#if DDPM_WITH_CPU_FAST
  // oneDNN's is the fast path's (kernels/cpu_fast/gemm.h says why); OpenBLAS's is kept to
  // measure against
  EXPECT_EQ(cpu_fast::gemm_library(), cpu_fast::GemmLibrary::OneDnn);
  const int64_t m = 13, n = 11, k = 37, pad = 3;
  on_each_gemm_library([&] {
    for (int layout = 0; layout < 4; ++layout) {
      const bool ta = layout & 1, tb = layout & 2;
      SCOPED_TRACE(testing::Message() << "trans_a " << ta << ", trans_b " << tb);
      const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      const std::vector<float> a = uniforms((ta ? k : m) * lda, 1),
                               b = uniforms((tb ? n : k) * ldb, 2);
      const auto at = [&](int64_t i, int64_t p) { return ta ? a[p * lda + i] : a[i * lda + p]; };
      const auto bt = [&](int64_t p, int64_t j) { return tb ? b[j * ldb + p] : b[p * ldb + j]; };
      for (const float beta : {1.0f, 0.0f}) {
        std::vector<float> c = uniforms(m * ldc, 3);
        if (beta == 0.0f)
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = std::nanf("");
        const std::vector<float> before = c;
        cpu_fast::sgemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < ldc; ++j) {
            if (j >= n) {
              EXPECT_EQ(c[i * ldc + j], before[i * ldc + j]) << "past n at " << i << ", " << j;
              continue;
            }
            double want = beta == 0.0f ? 0.0 : before[i * ldc + j];
            for (int64_t p = 0; p < k; ++p) want += 0.5 * double(at(i, p)) * double(bt(p, j));
            EXPECT_NEAR(c[i * ldc + j], want, 1e-5) << "at " << i << ", " << j << ", beta " << beta;
          }
        }
      }
    }
  });
#endif
}

#if DDPM_WITH_CPU_FAST
// Linear layers on the fast kernels against the reference: awkward shapes, then the CIFAR
// model's time-embedding MLP and an attention projection (K up to 512).
void expect_linear_layers_agree() {
  const auto lin = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  expect_kernels_agree(lin, {rnd({19, 7}, 1), rnd({7, 5}, 2), rnd({5}, 3)}, 1e-5, 1e-5);
  expect_kernels_agree([](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); },
                       {rnd({3, 5, 7, 65}, 1), rnd({65, 67}, 2, 0.1)}, 1e-5, 1e-5);
  // the CIFAR model's time-embedding MLP and an attention projection: K up to 512
  expect_kernels_agree(lin, {rnd({128, 512}, 1), rnd({512, 512}, 2, 0.04), rnd({512}, 3)}, 2e-4, 2e-4);
  expect_kernels_agree(lin, {rnd({2, 256, 256}, 1), rnd({256, 768}, 2, 0.06), rnd({768}, 3)}, 2e-4, 2e-4);
}
#endif

TEST(CpuFast, LinearLayersMatchTheReference) {
  REQUIRE_FAST();
#if DDPM_WITH_CPU_FAST
  on_each_gemm_library(expect_linear_layers_agree);
#endif
}


// Softmax over up to 256 keys, d-long dot products, in another order: 1e-4 as on CUDA. On
// both GEMM libraries: the (batch, head) pairs run their products one a thread where there
// are enough of them (the 3-head case), otherwise each product on all threads.
#if DDPM_WITH_CPU_FAST
void expect_attention_agrees() {
  const auto attn = [](int64_t heads) {
    return [heads](const std::vector<Tensor>& in) { return attention(in[0], heads); };
  };
  expect_kernels_agree(attn(1), {rnd({2, 9, 18}, 1)}, 1e-4, 1e-4);
  expect_kernels_agree(attn(3), {rnd({3, 7, 27}, 1)}, 1e-4, 1e-4);
  expect_kernels_agree(attn(2), {rnd({1, 70, 3 * 18}, 4, 0.5)}, 1e-4, 1e-4);
  expect_kernels_agree(attn(1), {rnd({2, 256, 768}, 1, 0.1)}, 1e-4, 1e-4);
  expect_kernels_agree(attn(4), {rnd({2, 64, 3 * 128}, 2, 0.2)}, 1e-4, 1e-4);
  // Under Precision::BF16 both round q, k, v, dout, P and dS to bf16 at the same points
  // (kernels/cpu/attention.h's model): the same bf16 operands, fp32 sums in other orders
  set_precision(Precision::BF16);
  expect_kernels_agree(attn(2), {rnd({2, 37, 3 * 32}, 7, 0.5)}, 1e-4, 1e-4);
  set_precision(Precision::F32);
}
#endif

TEST(CpuFast, AttentionMatchesTheReference) {
  REQUIRE_FAST();
#if DDPM_WITH_CPU_FAST
  on_each_gemm_library(expect_attention_agrees);
#endif
}

// eps where the reference has it, inside the root: groups whose variance (1e-6) is eps's
// own, where rsqrt(var + eps) and rsqrt(var + 2 eps) differ by 18% (as
// CudaOps.GroupNormEpsIsTheReferencesOnTightGroups). The values sit near 0.1, where float
// keeps their 1e-3 spread to 1e-5.
TEST(CpuFast, GroupNormEpsIsTheReferencesOnTightGroups) {
  REQUIRE_FAST();
  uint64_t stream = 70;
  for (const auto& [xs, groups] : {std::pair{Shape{2, 4, 4, 16}, int64_t{4}},
                                   std::pair{Shape{2, 5, 7, 65}, int64_t{13}}}) {
    SCOPED_TRACE(xs.str());
    const int64_t g = groups;
    const Tensor x = add(rnd(xs, stream, 1e-3), Tensor::full(xs, 0.1, DType::F32));
    expect_kernels_agree(
        [g](const std::vector<Tensor>& t) { return group_norm(t[0], t[1], t[2], g, 1e-6); },
        {x, rnd({xs[3]}, stream + 1), rnd({xs[3]}, stream + 2)}, 2e-3, 2e-3);
    stream += 3;
  }
}

// Statistics in float (fast) vs double (reference) over up to 16*16*16 = 4096 values per
// group, the CIFAR model's group shapes at batch 2 and awkward ones: 2e-4, as on CUDA. Plain,
// with SiLU (the fast backward fused per sample), and with SiLU and dropout.
TEST(CpuFast, GroupNormMatchesTheReference) {
  REQUIRE_FAST();
  struct Case {
    Shape x;
    int64_t groups;
  };
  const Case cases[] = {{{3, 5, 7, 65}, 13}, {{3, 9, 9, 64}, 32}, {{2, 32, 32, 128}, 32},
                        {{2, 16, 16, 256}, 32}, {{2, 4, 4, 512}, 32}, {{4, 28, 28, 32}, 8}};
  uint64_t stream = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.x.str());
    const int64_t ch = c.x[3], g = c.groups;
    const std::vector<Tensor> in = {rnd(c.x, stream, 2.0), rnd({ch}, stream + 1), rnd({ch}, stream + 2)};
    expect_kernels_agree(
        [g](const std::vector<Tensor>& t) { return group_norm(t[0], t[1], t[2], g, 1e-6); }, in,
        2e-4, 2e-4);
    expect_kernels_agree(
        [g](const std::vector<Tensor>& t) { return group_norm_silu(t[0], t[1], t[2], g, 1e-6); },
        in, 2e-4, 2e-4);
    expect_kernels_agree(
        [g](const std::vector<Tensor>& t) {
          return group_norm_silu_dropout(t[0], t[1], t[2], g, 0.3, 5, 9, 1e-6);
        },
        in, 2e-4, 2e-4);
    stream += 3;
  }
}

// oneDNN's convolution and the fast group norm write a first gradient outright
// (GradWrite::Assign: oneDNN straight into dx, instead of into scratch added onto zeros):
// written into NaNs is, bit for bit, added into zeros, so every element is written and none
// read. The awkward convolutions (stride 2, asymmetric padding, 1x1) and group shapes.
TEST(CpuFast, ConvolutionAndGroupNormWriteAFirstGradientOutright) {
  REQUIRE_FAST();
#if DDPM_WITH_CPU_FAST  // the kernels themselves: only in a build that has them
  const auto expect_written_is_added = [](int64_t n, const std::function<void(float*, GradWrite)>& run,
                                          const std::string& what) {
    std::vector<float> added(static_cast<size_t>(n), 0.0f), written(added.size(), NAN);
    run(added.data(), GradWrite::Accumulate);
    run(written.data(), GradWrite::Assign);
    EXPECT_EQ(written, added) << what;
  };
  uint64_t stream = 300;
  for (const ConvCase& c : conv_cases()) {
    if (c.x[3] > 65) continue;  // the awkward shapes
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, c.p);
    const Tensor x = rnd(c.x, stream), w = rnd({c.k, c.k, c.x[3], c.c_out}, stream + 1, 0.3);
    const Tensor dy = rnd({s.n, s.out_h(), s.out_w(), s.c_out}, stream + 2);
    stream += 3;
    expect_written_is_added(c.x.numel(), [&](float* dx, GradWrite write) {
      cpu_fast::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(), dx,
                                nullptr, nullptr, write);
    }, "conv " + c.x.str() + " k" + std::to_string(c.k));
  }
  for (const Shape& xs : {Shape{3, 5, 7, 65}, Shape{4, 28, 28, 32}}) {
    GroupNormShape s;
    s.n = xs[0], s.s = xs[1] * xs[2], s.c = xs[3], s.groups = xs[3] == 65 ? 13 : 8;
    const Tensor x = rnd(xs, stream, 2.0), gamma = rnd({s.c}, stream + 1), dy = rnd(xs, stream + 2);
    const Tensor mean = Tensor::empty(Shape{s.n * s.groups}, DType::F32, Device::CPU);
    const Tensor rstd = mean.clone(), y = Tensor::empty(xs, DType::F32, Device::CPU);
    cpu_fast::group_norm_forward(s, x.data<float>(), gamma.data<float>(), gamma.data<float>(),
                                 y.data<float>(), mean.data<float>(), rstd.data<float>());
    expect_written_is_added(xs.numel(), [&](float* dx, GradWrite write) {
      cpu_fast::group_norm_backward(s, x.data<float>(), gamma.data<float>(), mean.data<float>(),
                                    rstd.data<float>(), dy.data<float>(), dx, nullptr, nullptr,
                                    write);
    }, "group norm " + xs.str());
    expect_written_is_added(xs.numel(), [&](float* dx, GradWrite write) {
      cpu_fast::group_norm_silu_backward(s, x.data<float>(), gamma.data<float>(),
                                         gamma.data<float>(), mean.data<float>(),
                                         rstd.data<float>(), dy.data<float>(), dx, nullptr,
                                         nullptr, write);
    }, "group norm + SiLU " + xs.str());
  }
#endif
}

// Dropout draws four mask bits per Philox block instead of one, 16 blocks (64 elements) at
// once: the same mask as the reference, so the forward is the same bits; the backward's
// dy / (1 - p) may be one FMA (1 rounding instead of 2): within an ulp. Odd lengths exercise
// the last partial block, lengths around 64 the last partial chunk of 16 blocks.
TEST(CpuFast, DropoutDrawsTheReferenceMask) {
  REQUIRE_FAST();
  for (const int64_t n : {2, 3, 4, 5, 63, 64, 65, 1023, 4 * 16 * 16 * 256 + 1}) {
    SCOPED_TRACE(n);
    const Tensor x = rnd({n}, 40);
    const auto f = [](const std::vector<Tensor>& t) { return dropout(t[0], 0.3, 7, 0xD7000000000123ull); };
    const KernelRun ref = run(CpuKernels::Reference, f, {x}), fast = run(CpuKernels::Fast, f, {x});
    EXPECT_EQ(fast.out, ref.out);
    int64_t dropped = 0;
    for (float v : ref.out) dropped += v == 0.0f;
    if (n > 1000) {
      EXPECT_NEAR(double(dropped) / n, 0.3, 0.02);  // the mask is a real draw
    }
    expect_close(fast.grads[0], ref.grads[0], 0, 2.4e-7, "dropout gradient");
    // added to an earlier gradient c (N(0, 1)): that ulp, and one of the sum, absolute
    const KernelRun ref_added = run(CpuKernels::Reference, f, {x}, true),
                    fast_added = run(CpuKernels::Fast, f, {x}, true);
    expect_close(fast_added.grads[0], ref_added.grads[0], 2e-6, 2.4e-7,
                 "dropout gradient added to an earlier one");
  }
}

// The gradient's sum of squares (clipping's norm) in fixed chunks: the reference's value to
// double rounding, and the same bits at 1 and 2 threads, on lengths around the chunk. Each
// square of a float is exact in double (48 of 53 bits), so the two differ only in the order
// of their n - 1 double additions of positive terms, each sum within (n - 1) 2^-53 of the
// exact one (recursive summation's bound): |fast - ref| <= 2 n 2^-53 ref. (The bound was
// 1e-13 ref, what earlier machines gave; one with AVX-512, where the -march=native build's
// `omp simd` may sum in another order, missed it by 7% at n = 196,625.)
TEST(CpuFast, SumOfSquaresIsTheReferenceForAnyThreadCount) {
  REQUIRE_FAST();
#if DDPM_WITH_CPU_FAST
  const int threads = omp_get_max_threads();
  for (const int64_t n : {int64_t(0), int64_t(1), cpu_fast::kSquaresChunk - 1,
                          3 * cpu_fast::kSquaresChunk + 17}) {
    const std::vector<float> x = rnd({std::max<int64_t>(n, 1)}, 500 + n).to_vector<float>();
    const double ref = cpu::sum_of_squares(n, x.data());
    omp_set_num_threads(1);
    const double one = cpu_fast::sum_of_squares(n, x.data());
    omp_set_num_threads(2);
    const double two = cpu_fast::sum_of_squares(n, x.data());
    omp_set_num_threads(threads);
    EXPECT_NEAR(one, ref, 2.0 * double(n) * std::ldexp(1.0, -53) * ref) << "n = " << n;
    EXPECT_EQ(one, two) << "n = " << n;  // bit for bit
  }
#endif
}

// Same inputs, same thread count: the same bits (the resume tests rely on it).
TEST(CpuFast, TheFastKernelsAreDeterministic) {
  REQUIRE_FAST();
  const auto f = [](const std::vector<Tensor>& in) {
    const Tensor h = conv2d(in[0], in[1], in[2], Conv2dParams::same(3));
    return attention(reshape(h, Shape{2, 16 * 16, 3 * 8}), 2);
  };
  const std::vector<Tensor> in = {rnd({2, 16, 16, 5}, 1), rnd({3, 3, 5, 24}, 2, 0.2), rnd({24}, 3)};
  const KernelRun a = run(CpuKernels::Fast, f, in), b = run(CpuKernels::Fast, f, in);
  EXPECT_EQ(a.out, b.out);
  for (size_t k = 0; k < in.size(); ++k) EXPECT_EQ(a.grads[k], b.grads[k]) << "input " << k;
}

// f64 runs the reference whatever is selected: the gradient checks stay exact.
TEST(CpuFast, DoublePrecisionAlwaysRunsTheReference) {
  REQUIRE_FAST();
  const Tensor x = test::random_tensor({2, 5, 5, 3}, 1), w = test::random_tensor({3, 3, 3, 4}, 2);
  Tensor ref, fast;
  {
    Kernels use(CpuKernels::Reference);
    ref = conv2d(x, w, Tensor(), Conv2dParams::same(3));
  }
  {
    Kernels use(CpuKernels::Fast);
    fast = conv2d(x, w, Tensor(), Conv2dParams::same(3));
  }
  EXPECT_EQ(test::values(ref), test::values(fast));
}

// One training step of configs/tiny.json at 8 channels from the same trained weights (two
// reference steps, through a checkpoint), each path: the loss to 1e-5 relative, every
// gradient to 1e-3 of the largest (each op's float differences compound through ~20 layers).
TEST(CpuFast, ATinyUNetStepMatchesTheReference) {
  REQUIRE_FAST();
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o : {"base_channels=8", "groups=4", "batch_size=4", "dropout=0.1"})
    apply_override(j, o);
  auto config = [&](const char* kernels) {
    nlohmann::json k = j;
    apply_override(k, std::string("cpu_kernels=") + kernels);
    return read_image_train_config(k, "tiny.json (test)");
  };
  const std::string ckpt = ::testing::TempDir() + "/cpu_fast_step.safetensors";
  {
    ImageRun r(config("reference"));
    r.step();
    r.step();  // trained weights: every gradient is non-zero
    r.save_checkpoint(ckpt);
  }
  auto step = [&](const char* kernels) {
    ImageRun r(config(kernels));
    r.load_checkpoint(ckpt);
    const double loss = r.step().loss;
    return std::make_pair(loss, r.store().flat_grad().to_vector<float>());
  };
  const auto [ref_loss, ref_grad] = step("reference");
  const auto [fast_loss, fast_grad] = step("fast");
  EXPECT_NEAR(fast_loss, ref_loss, 1e-5 * ref_loss);
  double scale = 0;
  for (float g : ref_grad) scale = std::max(scale, double(std::fabs(g)));
  ASSERT_GT(scale, 0.0);
  for (size_t i = 0; i < ref_grad.size(); ++i)
    ASSERT_NEAR(fast_grad[i], ref_grad[i], 1e-3 * scale) << "gradient " << i;
}

}  // namespace
}  // namespace ddpm
