// Forward values of the CPU reference ops against small hand-computed cases and independent
// naive loops, and the errors each op gives for bad shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;
using test::expect_finite_nonzero;
using test::random_tensor;
using test::values;

void expect_all_near(const std::vector<double>& got, const std::vector<double>& want, double tol,
                     const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol) << what << " element " << i;
}

TEST(OpsForward, ElementwiseValues) {
  Tensor a = Tensor::from_vector<float>(Shape{3}, {1, -2, 0.5f});
  Tensor b = Tensor::from_vector<float>(Shape{3}, {4, 3, -2});
  EXPECT_EQ(add(a, b).to_vector<float>(), (std::vector<float>{5, 1, -1.5f}));
  EXPECT_EQ(mul(a, b).to_vector<float>(), (std::vector<float>{4, -6, -1}));
  EXPECT_EQ(scale(a, 2.0).to_vector<float>(), (std::vector<float>{2, -4, 1}));
  // silu(0) = 0, silu(1) = 1/(1+e^-1), silu(-1) = -1/(1+e)
  Tensor s = silu(Tensor::from_vector<double>(Shape{3}, {0, 1, -1}));
  expect_all_near(values(s), {0.0, 1 / (1 + std::exp(-1.0)), -1 / (1 + std::exp(1.0))}, 1e-15,
                  "silu");
  expect_error([&] { add(a, Tensor::zeros(Shape{4})); }, {"op 'add'", "(3)", "(4)"});
  expect_error([&] { add(a, Tensor::zeros(Shape{3}, DType::F64)); }, {"op 'add'", "f64"});
  expect_error([&] { silu(Tensor::zeros(Shape{3}, DType::I32)); }, {"op 'silu'", "i32"});
}

TEST(OpsForward, BroadcastAdd) {
  Tensor x = Tensor::zeros(Shape{2, 1, 2, 3}, DType::F64);
  Tensor per_channel = Tensor::from_vector<double>(Shape{3}, {1, 2, 3});
  Tensor per_sample = Tensor::from_vector<double>(Shape{2, 3}, {1, 2, 3, 10, 20, 30});
  expect_all_near(values(broadcast_add(x, per_channel)), {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3}, 0,
                  "per channel");
  expect_all_near(values(broadcast_add(x, per_sample)),
                  {1, 2, 3, 1, 2, 3, 10, 20, 30, 10, 20, 30}, 0, "per sample");
  expect_error([&] { broadcast_add(x, Tensor::zeros(Shape{4}, DType::F64)); },
               {"op 'broadcast_add'", "(4)", "(C) = (3)"});
}

TEST(OpsForward, LinearIsAMatmulPlusBias) {
  Tensor x = Tensor::from_vector<double>(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor w = Tensor::from_vector<double>(Shape{3, 2}, {1, 0, 0, 1, 1, 1});
  Tensor b = Tensor::from_vector<double>(Shape{2}, {0.5, -0.5});
  expect_all_near(values(linear(x, w, b)), {4.5, 4.5, 10.5, 10.5}, 0, "linear");
  expect_error([&] { linear(x, Tensor::zeros(Shape{4, 2}, DType::F64), b); },
               {"op 'linear'", "last dimension 3", "expects 4"});
}

// Direct 7-loop convolution, written independently of the kernel's run/GEMM structure.
std::vector<double> naive_conv(const Tensor& x, const Tensor& w, const Tensor& b,
                               const Conv2dParams& p) {
  const Shape xs = x.shape(), ws = w.shape();
  const int64_t n = xs[0], h = xs[1], wd = xs[2], ci = xs[3], kh = ws[0], kw = ws[1], co = ws[3];
  const int64_t oh = (h + p.pad_top + p.pad_bottom - kh) / p.stride + 1;
  const int64_t ow = (wd + p.pad_left + p.pad_right - kw) / p.stride + 1;
  const std::vector<double> xv = values(x), wv = values(w), bv = values(b);
  std::vector<double> y;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t r = 0; r < oh; ++r)
      for (int64_t c = 0; c < ow; ++c)
        for (int64_t o = 0; o < co; ++o) {
          double acc = bv[o];
          for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
              const int64_t ih = r * p.stride - p.pad_top + i, iw = c * p.stride - p.pad_left + j;
              if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
              for (int64_t k = 0; k < ci; ++k)
                acc += xv[((in * h + ih) * wd + iw) * ci + k] * wv[((i * kw + j) * ci + k) * co + o];
            }
          y.push_back(acc);
        }
  return y;
}

TEST(OpsForward, Conv2dMatchesNaiveLoops) {
  const struct {
    Shape x, w;
    Conv2dParams p;
  } cases[] = {
      {Shape{3, 5, 7, 3}, Shape{3, 3, 3, 4}, Conv2dParams::same(3)},
      {Shape{2, 8, 8, 5}, Shape{3, 3, 5, 6}, Conv2dParams::downsample()},
      {Shape{2, 9, 9, 65}, Shape{3, 3, 65, 3}, Conv2dParams{2, 1, 1, 1, 1}},
      {Shape{1, 6, 5, 2}, Shape{3, 3, 2, 3}, Conv2dParams{1, 0, 2, 1, 0}},
      {Shape{2, 4, 3, 7}, Shape{1, 1, 7, 5}, Conv2dParams{}},
      // stride 2 on a 2-wide map: the kernel's last column meets only the right padding
      {Shape{1, 3, 2, 2}, Shape{3, 3, 2, 3}, Conv2dParams::downsample()},
  };
  int stream = 0;
  for (const auto& c : cases) {
    Tensor x = random_tensor(c.x, ++stream), w = random_tensor(c.w, ++stream),
           b = random_tensor(Shape{c.w[3]}, ++stream);
    Tensor y = conv2d(x, w, b, c.p);
    expect_finite_nonzero(y, "conv2d output");
    expect_all_near(values(y), naive_conv(x, w, b, c.p), 1e-12, "conv2d");
  }
}

TEST(OpsForward, Conv1x1EqualsMatmul) {
  Tensor x = random_tensor(Shape{3, 5, 7, 6}, 1);
  Tensor w = random_tensor(Shape{1, 1, 6, 4}, 2);
  Tensor b = random_tensor(Shape{4}, 3);
  Tensor conv = conv2d(x, w, b, Conv2dParams{});
  Tensor mm = linear(x.view(Shape{105, 6}), w.view(Shape{6, 4}), b);
  expect_all_near(values(conv), values(mm), 1e-13, "1x1 conv vs matmul");
}

TEST(OpsForward, Conv2dShapesAndErrors) {
  Tensor x = Tensor::zeros(Shape{2, 32, 32, 3});
  EXPECT_EQ(conv2d(x, Tensor::zeros(Shape{3, 3, 3, 8}), Tensor(), Conv2dParams::downsample())
                .shape(),
            (Shape{2, 16, 16, 8}));
  expect_error([&] { conv2d(x, Tensor::zeros(Shape{3, 3, 4, 8}), Tensor(), Conv2dParams{}); },
               {"op 'conv2d'", "expects 4 input channels", "has 3"});
  expect_error([&] { conv2d(x, Tensor::zeros(Shape{3, 3, 3, 8}), Tensor::zeros(Shape{7}),
                            Conv2dParams{}); },
               {"op 'conv2d'", "must be (8)"});
  expect_error([&] { conv2d(x.view(Shape{2, 1024, 3}), Tensor::zeros(Shape{3, 3, 3, 8}),
                            Tensor(), Conv2dParams{}); },
               {"op 'conv2d'", "must have 4 dimensions"});
}

TEST(OpsForward, GroupNormNormalisesEachGroup) {
  const int64_t n = 3, hw = 35, c = 12, groups = 4, cg = c / groups;
  Tensor x = random_tensor(Shape{n, 5, 7, c}, 1, DType::F64, 3.0);
  x = add(x, Tensor::full(x.shape(), 2.0, DType::F64));  // a mean to remove
  Tensor y = group_norm(x, Tensor::full(Shape{c}, 1.0, DType::F64),
                        Tensor::zeros(Shape{c}, DType::F64), groups, 1e-6);
  const std::vector<double> v = values(y);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t g = 0; g < groups; ++g) {
      double m = 0, q = 0;
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t k = 0; k < cg; ++k) m += v[(s * hw + p) * c + g * cg + k];
      m /= hw * cg;
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t k = 0; k < cg; ++k) q += std::pow(v[(s * hw + p) * c + g * cg + k] - m, 2);
      q /= hw * cg;
      EXPECT_NEAR(m, 0.0, 1e-12);
      // var/(var + eps) with var ~ 9: 1 - 1.1e-7
      EXPECT_NEAR(q, 1.0, 1e-6);
    }
  // Affine: y = xhat * gamma + beta
  Tensor y2 = group_norm(x, Tensor::full(Shape{c}, 2.0, DType::F64),
                         Tensor::full(Shape{c}, 0.5, DType::F64), groups, 1e-6);
  const std::vector<double> v2 = values(y2);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(v2[i], 2 * v[i] + 0.5, 1e-12);
  // eps inside the root, as TensorFlow's and PyTorch's group norms: xhat = (x - mu) /
  // sqrt(var + eps). A group of variance 1e-6 with eps = 1e-6 is scaled by 1/sqrt(2e-6) = 707
  // (1/(sqrt(var) + eps) would be 999): x = +-1e-3 about 5 gives xhat = +-1/sqrt(2).
  std::vector<double> flat(16);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 5.0 + (i % 2 ? 1e-3 : -1e-3);
  const std::vector<double> tight = values(group_norm(
      Tensor::from_vector(Shape{1, 2, 2, 4}, flat), Tensor::full(Shape{4}, 1.0, DType::F64),
      Tensor::zeros(Shape{4}, DType::F64), 2, 1e-6));
  for (size_t i = 0; i < tight.size(); ++i)
    ASSERT_NEAR(tight[i], (i % 2 ? 1 : -1) / std::sqrt(2.0), 1e-9) << i;
  expect_error([&] { group_norm(random_tensor(Shape{2, 3, 3, 65}, 1), Tensor::zeros(Shape{65}, DType::F64),
                                Tensor::zeros(Shape{65}, DType::F64), 32); },
               {"op 'group_norm'", "65 channels cannot be split into 32 equal groups"});
}

TEST(OpsForward, FusedGroupNormSiluEqualsTheTwoOps) {
  const Tensor x = random_tensor(Shape{3, 5, 7, 12}, 1, DType::F64, 2.0);
  const Tensor g = random_tensor(Shape{12}, 2), b = random_tensor(Shape{12}, 3);
  expect_all_near(values(group_norm_silu(x, g, b, 4)), values(silu(group_norm(x, g, b, 4))), 1e-15,
                  "fused gn+silu");
  expect_error([&] { group_norm_silu(x, g, b, 5); }, {"op 'group_norm_silu'", "5 equal groups"});
}

// group_norm_silu_dropout is dropout(group_norm_silu(x)) bit for bit, forward and every
// gradient, with both CPU kernel sets (f32, the U-Net's case) and in f64; a bad p is refused.
TEST(OpsForward, FusedGroupNormSiluDropoutIsTheTwoOpsBitForBit) {
  const auto grads = [](bool fused, DType dt) {
    Tensor x = random_tensor(Shape{3, 5, 7, 12}, 1, dt, 2.0);
    Tensor g = random_tensor(Shape{12}, 2, dt), b = random_tensor(Shape{12}, 3, dt);
    for (Tensor* t : {&x, &g, &b}) t->set_requires_grad(true);
    const Tensor y = fused ? group_norm_silu_dropout(x, g, b, 4, 0.3, 7, 11)
                           : dropout(group_norm_silu(x, g, b, 4), 0.3, 7, 11);
    backward(sum(mul(y, random_tensor(y.shape(), 4, dt))));
    return std::vector<std::vector<double>>{values(y), values(x.grad()), values(g.grad()),
                                            values(b.grad())};
  };
  for (CpuKernels k : {CpuKernels::Reference, CpuKernels::Fast}) {
    if (k == CpuKernels::Fast && !cpu_fast_kernels_built()) continue;
    set_cpu_kernels(k);
    EXPECT_EQ(grads(true, DType::F32), grads(false, DType::F32));
  }
  set_cpu_kernels(cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference);
  const auto f64 = grads(true, DType::F64);
  EXPECT_EQ(f64, grads(false, DType::F64));
  EXPECT_NE(std::count(f64[0].begin(), f64[0].end(), 0.0), 0) << "nothing was dropped";
  const Tensor x = random_tensor(Shape{2, 3, 4}, 1);
  expect_error([&] { group_norm_silu_dropout(x, random_tensor({4}, 2), random_tensor({4}, 3), 2,
                                             1.0, 0, 0); },
               {"op 'group_norm_silu_dropout'", "p must be in [0, 1)"});
}

TEST(OpsForward, UpsampleCopiesEachPixelFourTimes) {
  Tensor x = Tensor::from_vector<float>(Shape{1, 1, 2, 2}, {1, 2, 3, 4});  // 1x2 map, 2 ch
  EXPECT_EQ(upsample_nearest2x(x).to_vector<float>(),
            (std::vector<float>{1, 2, 1, 2, 3, 4, 3, 4, 1, 2, 1, 2, 3, 4, 3, 4}));
}

TEST(OpsForward, ConcatAndSplitRoundTrip) {
  Tensor a = random_tensor(Shape{3, 5, 7, 2}, 1), b = random_tensor(Shape{3, 5, 7, 5}, 2);
  Tensor ab = concat({a, b});
  EXPECT_EQ(ab.shape(), (Shape{3, 5, 7, 7}));
  EXPECT_EQ(values(ab)[7], values(a)[2 + 0]) << "pixel 1 starts with a's channels";
  std::vector<Tensor> parts = split(ab, {2, 5});
  EXPECT_EQ(values(parts[0]), values(a));
  EXPECT_EQ(values(parts[1]), values(b));
  expect_error([&] { concat({a, random_tensor(Shape{3, 5, 6, 2}, 3)}); },
               {"op 'concat'", "other than the last"});
  expect_error([&] { split(ab, {2, 4}); }, {"op 'split'", "add up to 6", "last dimension 7"});
}

TEST(OpsForward, AttentionWithIdenticalKeysAveragesValues) {
  // All keys equal -> uniform weights -> every output token is the mean of the values.
  const int64_t b = 2, l = 5, c = 4;
  Tensor qkv = random_tensor(Shape{b, l, 3 * c}, 1);
  std::vector<double> v = values(qkv);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t t = 0; t < l; ++t)
      for (int64_t k = 0; k < c; ++k) v[(i * l + t) * 3 * c + c + k] = 0.3 * (k + 1);
  qkv = Tensor::from_vector<double>(qkv.shape(), v);
  const std::vector<double> out = values(attention(qkv, 2));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t k = 0; k < c; ++k) {
      double m = 0;
      for (int64_t t = 0; t < l; ++t) m += v[(i * l + t) * 3 * c + 2 * c + k];
      m /= l;
      for (int64_t t = 0; t < l; ++t) ASSERT_NEAR(out[(i * l + t) * c + k], m, 1e-12);
    }
}

TEST(OpsForward, AttentionMatchesNaiveSoftmax) {
  const int64_t b = 2, l = 6, c = 6, heads = 2, d = 3;
  Tensor qkv = random_tensor(Shape{b, l, 3 * c}, 4);
  const std::vector<double> v = values(qkv), out = values(attention(qkv, heads));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < l; ++t) {
        std::vector<double> w(l);
        double z = 0;
        for (int64_t s = 0; s < l; ++s) {
          double dot = 0;
          for (int64_t k = 0; k < d; ++k)
            dot += v[(i * l + t) * 3 * c + h * d + k] * v[(i * l + s) * 3 * c + c + h * d + k];
          w[s] = std::exp(dot / std::sqrt(double(d)));
          z += w[s];
        }
        for (int64_t k = 0; k < d; ++k) {
          double o = 0;
          for (int64_t s = 0; s < l; ++s) o += w[s] / z * v[(i * l + s) * 3 * c + 2 * c + h * d + k];
          ASSERT_NEAR(out[(i * l + t) * c + h * d + k], o, 1e-12);
        }
      }
  expect_error([&] { attention(qkv, 4); }, {"op 'attention'", "6 channels", "4 heads"});
  expect_error([&] { attention(random_tensor(Shape{2, 6, 10}, 1), 1); }, {"(B, L, 3C)"});
}

TEST(OpsForward, ReductionsAndMse) {
  Tensor x = Tensor::from_vector<double>(Shape{2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(sum(x).item(), 10.0);
  EXPECT_EQ(mean(x).item(), 2.5);
  Tensor t = Tensor::from_vector<double>(Shape{2, 2}, {0, 2, 5, 4});
  EXPECT_EQ(mse(x, t).item(), (1.0 + 0 + 4 + 0) / 4);
}

TEST(OpsForward, TimestepEmbeddingValues) {
  Tensor t = Tensor::from_vector<double>(Shape{3}, {0, 1, 999});
  const std::vector<double> e = values(timestep_embedding(t, 8));
  // t = 0: sin = 0, cos = 1. Frequencies f_i = 10000^(-i/3): 1, 10000^-1/3, 10000^-2/3, 1e-4.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(e[i], 0.0);
    EXPECT_EQ(e[4 + i], 1.0);
  }
  EXPECT_NEAR(e[8 + 0], std::sin(1.0), 1e-15);
  EXPECT_NEAR(e[8 + 3], std::sin(1e-4), 1e-15);
  EXPECT_NEAR(e[16 + 4 + 1], std::cos(999 * std::pow(10000.0, -1.0 / 3)), 1e-12);
  expect_error([&] { timestep_embedding(t, 7); }, {"even and >= 4", "7"});
}

TEST(OpsForward, DropoutMaskIsReproducibleAndScaled) {
  const double p = 0.25;
  Tensor x = Tensor::full(Shape{100000}, 1.0);
  const std::vector<float> a = dropout(x, p, 1, 2).to_vector<float>();
  const std::vector<float> b = dropout(x, p, 1, 2).to_vector<float>();
  const std::vector<float> c = dropout(x, p, 1, 3).to_vector<float>();
  EXPECT_EQ(a, b) << "same (seed, stream): same mask";
  EXPECT_NE(a, c) << "another stream (step): another mask";
  int64_t kept = 0;
  for (float v : a) {
    ASSERT_TRUE(v == 0.0f || std::fabs(v - 1.0f / 0.75f) < 1e-6f);
    kept += v != 0.0f;
  }
  // Binomial(1e5, 0.75): standard deviation 137; 5 sigma
  EXPECT_NEAR(static_cast<double>(kept), 75000.0, 685.0);
  EXPECT_EQ(dropout(x, 0.0, 1, 2).to_vector<float>(), x.to_vector<float>());
  expect_error([&] { dropout(x, 1.0, 1, 2); }, {"op 'dropout'", "[0, 1)"});
}

}  // namespace
}  // namespace ddpm

namespace ddpm {
namespace {

// conv2d_add is the three ops it fuses, in their order, bit for bit on the CPU (both kernel
// sets, f32), and names a wrongly shaped addend.
TEST(OpsForward, Conv2dAddIsConvThenPerSampleThenResidualAdd) {
  const Conv2dParams p = Conv2dParams::same(3);
  const Tensor x = random_tensor({3, 5, 7, 6}, 1, DType::F32);
  const Tensor w = random_tensor({3, 3, 6, 4}, 2, DType::F32, 0.3);
  const Tensor b = random_tensor({4}, 3, DType::F32), v = random_tensor({3, 4}, 4, DType::F32);
  const Tensor r = random_tensor({3, 5, 7, 4}, 5, DType::F32);
  for (CpuKernels k : {CpuKernels::Reference, CpuKernels::Fast}) {
    if (k == CpuKernels::Fast && !cpu_fast_kernels_built()) continue;
    set_cpu_kernels(k);
    EXPECT_EQ(conv2d_add(x, w, b, p, v, r).to_vector<float>(),
              add(broadcast_add(conv2d(x, w, b, p), v), r).to_vector<float>());
    EXPECT_EQ(conv2d_add(x, w, b, p, Tensor(), r).to_vector<float>(),
              add(r, conv2d(x, w, b, p)).to_vector<float>());
  }
  set_cpu_kernels(cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference);
  expect_error([&] { conv2d_add(x, w, b, p, random_tensor({3, 5}, 6, DType::F32), Tensor()); },
               {"op 'conv2d'", "per-sample addend v", "(3, 4)"});
  expect_error([&] { conv2d_add(x, w, b, p, Tensor(), random_tensor({3, 5, 7, 5}, 6, DType::F32)); },
               {"op 'conv2d'", "residual r", "(3, 5, 7, 4)"});
}

}  // namespace
}  // namespace ddpm
