// bf16 storage of activations on the CPU (engine/ops.h: cast, set_activation_dtype): the
// cast's rounding against hand-worked bit patterns; gradients reaching bf16 tensors rounded
// once per contribution; group norm's bf16 kernels against the f32 op on the widened values;
// and a U-Net step with bf16 activations within the bound its roundings allow of the fp32
// step (docs/precision.md derives it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine/file_io.h"
#include "engine/ops.h"
#include "kernels/bf16.h"
#include "models/unet/image_train.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<uint16_t> bits_of(const Tensor& t) {
  std::vector<bf16> v = t.to_vector<bf16>();
  std::vector<uint16_t> out;
  for (const bf16& b : v) out.push_back(b.bits);
  return out;
}

Tensor bf16_tensor(const Shape& shape, const std::vector<float>& values) {
  return cast(Tensor::from_vector(shape, values), DType::BF16);
}

TEST(Bf16Storage, CastRoundsToNearestEvenAndWidensExactly) {
  // bf16 keeps 7 of fp32's 23 mantissa bits: the ulp of [1, 2) is 2^-7 (0x10000 in fp32 bits).
  const std::vector<float> x = {
      1.0f,
      from_bits(0x3f808000),  // 1 + 2^-8: a tie between 1 (even) and 1 + 2^-7 (odd) -> 1
      from_bits(0x3f818000),  // 1 + 3 * 2^-8: a tie between 1 + 2^-7 (odd) and 1 + 2^-6 -> up
      from_bits(0x3f808001),  // just above the tie -> 1 + 2^-7
      -from_bits(0x3f808001), 0.0f, -0.0f, 3.4e38f /* past the largest bf16's half-ulp -> infinity */};
  const std::vector<uint16_t> want = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf81, 0x0000, 0x8000,
                                      0x7f80};
  const Tensor b = cast(Tensor::from_vector(Shape{8}, x), DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(bits_of(b), want);
  const std::vector<float> back = cast(b, DType::F32).to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(back[i], float_from_bf16_bits(want[i])) << "element " << i;
  const Tensor same = Tensor::from_vector(Shape{1}, std::vector<float>{1.0f});
  EXPECT_TRUE(cast(same, DType::F32).same(same)) << "a cast to its own dtype is the tensor";
  test::expect_error([&] { cast(same, DType::F64); }, {"cast", "f32", "bf16", "f64"});
  // A NaN stays a NaN (its sign and top payload bits kept, the quiet bit set), also one whose
  // payload lies only in the 16 bits bf16 drops: cut off, that one would read as infinity.
  const std::vector<float> nans = {from_bits(0x7f800001), from_bits(0xff800001),
                                   from_bits(0x7fc00000), from_bits(0x7fa00000)};
  EXPECT_EQ(bits_of(cast(Tensor::from_vector(Shape{4}, nans), DType::BF16)),
            (std::vector<uint16_t>{0x7fc0, 0xffc0, 0x7fc0, 0x7fe0}));
}

TEST(Bf16Storage, AGradientReachingABf16TensorIsRoundedOncePerContribution) {
  // x (bf16) feeds two f32 branches: loss = sum(c1 * f32(x)) + sum(c2 * f32(x)). The tape
  // walks the second branch first: dx = bf16(bf16(0 + c2) + c1), each add in fp32.
  // c1 + c2 lies just below a rounding midpoint of bf16 (171.5 * 2^-7) and bf16(c2) + c1 just
  // above it, so one rounding and two give different bits.
  const float c1 = 1.0062104f, c2 = 1.0f / 3;
  Tensor x = bf16_tensor(Shape{2}, {0.5f, -2.0f});
  x.set_requires_grad(true);
  const Tensor k1 = Tensor::full(Shape{2}, c1), k2 = Tensor::full(Shape{2}, c2);
  const Tensor loss = add(sum(mul(cast(x, DType::F32), k1)), sum(mul(cast(x, DType::F32), k2)));
  backward(loss);
  ASSERT_EQ(x.grad().dtype(), DType::BF16);
  const float want = round_to_bf16(round_to_bf16(c2) + c1);
  for (float g : cast(x.grad(), DType::F32).to_vector<float>()) EXPECT_EQ(g, want);
  EXPECT_NE(want, round_to_bf16(c1 + c2)) << "the example must tell one rounding from two";
}

// accumulate(dst, src, alpha) across the dtypes: dst = dst + alpha src in fp32, then stored
// in dst's dtype (rounded once when that is bf16), for each pairing with bf16. The GPU is
// held to these bits (CudaBf16Storage.CastAndAccumulateAreTheCpusBits); here they are held
// to the definition.
TEST(Bf16Storage, AccumulateAcrossDtypesIsDstPlusAlphaSrcRoundedOnce) {
  const std::vector<float> d = test::random_tensor(Shape{64}, 20, DType::F32).to_vector<float>();
  const std::vector<float> x = test::random_tensor(Shape{64}, 21, DType::F32).to_vector<float>();
  const float alpha = 0.75f;
  for (const auto& [dst16, src16] : {std::pair{true, false}, {false, true}, {true, true}}) {
    SCOPED_TRACE(testing::Message() << "dst " << (dst16 ? "bf16" : "f32") << ", src "
                                    << (src16 ? "bf16" : "f32"));
    const Tensor src = src16 ? bf16_tensor(Shape{64}, x) : Tensor::from_vector(Shape{64}, x);
    const Tensor dst = dst16 ? bf16_tensor(Shape{64}, d) : Tensor::from_vector(Shape{64}, d);
    const std::vector<float> d0 = cast(dst, DType::F32).to_vector<float>();
    const std::vector<float> s0 = cast(src, DType::F32).to_vector<float>();
    accumulate(dst, src, alpha);
    const std::vector<float> got = cast(dst, DType::F32).to_vector<float>();
    for (size_t i = 0; i < d.size(); ++i) {
      const float sum = d0[i] + alpha * s0[i];
      EXPECT_EQ(got[i], dst16 ? round_to_bf16(sum) : sum) << "element " << i;
    }
  }
}

TEST(Bf16Storage, OpsWithoutBf16KernelsRunOnWidenedCopies) {
  // silu of a bf16 tensor is bf16, equal to bf16(silu(f32(x))); its gradient reaches the
  // bf16 input as bf16(silu'(x) dy).
  Tensor x = bf16_tensor(Shape{3}, {-1.5f, 0.25f, 2.0f});
  x.set_requires_grad(true);
  const Tensor y = silu(x);
  ASSERT_EQ(y.dtype(), DType::BF16);
  const std::vector<float> xs = cast(x, DType::F32).to_vector<float>();
  const std::vector<float> ys = cast(y, DType::F32).to_vector<float>();
  backward(sum(y));
  const std::vector<float> dx = cast(x.grad(), DType::F32).to_vector<float>();
  for (size_t i = 0; i < xs.size(); ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-xs[i]));
    EXPECT_NEAR(ys[i], round_to_bf16(xs[i] * sig), 1e-6f * std::fabs(ys[i]));
    EXPECT_NEAR(dx[i], round_to_bf16(sig * (1 + xs[i] * (1 - sig))), 4e-3f * std::fabs(dx[i]));
    EXPECT_EQ(dx[i], round_to_bf16(dx[i])) << "a bf16 gradient holds bf16 values";
  }
  // reductions sum in fp32 and stay f32 (a loss)
  EXPECT_EQ(sum(x).dtype(), DType::F32);
}

// group norm (+ SiLU, + dropout) on bf16 x runs kernels/cpu/group_norm_bf16.h: the forward
// is the f32 op on the widened x, rounded once (bit for bit); the backward also stores
// dh = dy silu' in bf16 between its two passes, so dx, dgamma and dbeta differ from the widened f32 chain by
// that rounding: at most 2^-8 of each dh term, and each sum by at most 2^-8 of its terms'
// magnitudes (bounded here by 2^-8 of the element count times the largest term, loosely).
TEST(Bf16Storage, GroupNormRunsItsBf16Kernels) {
  const Shape xs{2, 3, 3, 8};
  std::vector<float> xv(xs.numel()), gv(8), bv(8), dyv(xs.numel());
  for (size_t i = 0; i < xv.size(); ++i) {
    xv[i] = std::sin(0.37f * i) * 2.0f + 0.1f;
    dyv[i] = std::cos(0.71f * i);
  }
  for (int c = 0; c < 8; ++c) {
    gv[c] = 1.0f + 0.1f * c;
    bv[c] = 0.05f * c - 0.2f;
  }
  enum Op { kNorm, kNormSilu, kNormSiluDropout };
  for (const Op op : {kNorm, kNormSilu, kNormSiluDropout}) {
    const bool with_silu = op != kNorm;
    SCOPED_TRACE(op == kNorm ? "group_norm" : op == kNormSilu ? "group_norm_silu" : "+ dropout");
    auto run = [&](bool native, std::vector<float>& y, std::vector<float>& dx,
                   std::vector<float>& dgamma, std::vector<float>& dbeta) {
      Tensor x = bf16_tensor(xs, xv);
      x.set_requires_grad(true);
      Tensor gamma = Tensor::from_vector(Shape{8}, gv), beta = Tensor::from_vector(Shape{8}, bv);
      gamma.set_requires_grad(true);
      beta.set_requires_grad(true);
      const Tensor in = native ? x : cast(x, DType::F32);
      Tensor out = op == kNorm       ? group_norm(in, gamma, beta, 2)
                   : op == kNormSilu ? group_norm_silu(in, gamma, beta, 2)
                                     : group_norm_silu_dropout(in, gamma, beta, 2, 0.3, 7, 11);
      if (!native) out = cast(out, DType::BF16);
      EXPECT_EQ(out.dtype(), DType::BF16);
      const Tensor dy = bf16_tensor(xs, dyv);
      tape().backward(out, dy);
      y = cast(out, DType::F32).to_vector<float>();
      dx = cast(x.grad(), DType::F32).to_vector<float>();
      dgamma = gamma.grad().to_vector<float>();
      dbeta = beta.grad().to_vector<float>();
    };
    std::vector<float> y1, dx1, dg1, db1, y2, dx2, dg2, db2;
    run(true, y1, dx1, dg1, db1);
    run(false, y2, dx2, dg2, db2);
    EXPECT_EQ(y1, y2) << "forward: the f32 op on the widened x, rounded once";
    double dx_max = 0, d_max = 0, diff = 0;
    for (float v : dx2) dx_max = std::max(dx_max, double(std::fabs(v)));
    for (float v : dg2) d_max = std::max(d_max, double(std::fabs(v)));
    for (float v : db2) d_max = std::max(d_max, double(std::fabs(v)));
    const double elems_per_channel = 2 * 9;
    for (size_t i = 0; i < dx1.size(); ++i) {
      // dx: 2^-8 for the dh rounding through the group's sums, plus its own final rounding
      EXPECT_NEAR(dx1[i], dx2[i], 2 * 0x1p-8 * (dx_max + 1e-6)) << "dx " << i;
      diff += std::fabs(dx1[i] - dx2[i]);
    }
    for (size_t c = 0; c < 8; ++c) {
      EXPECT_NEAR(dg1[c], dg2[c], 0x1p-8 * elems_per_channel * 3.0 + 1e-6) << "dgamma " << c;
      EXPECT_NEAR(db1[c], db2[c], 0x1p-8 * elems_per_channel + 1e-6) << "dbeta " << c;
      diff += std::fabs(dg1[c] - dg2[c]);
    }
    if (with_silu) {
      EXPECT_GT(diff, 0.0) << "the bf16 kernels (dh stored in bf16) did not run";
    }
  }
}

// A tiny U-Net (tiny.json at 8 channels, as tests/test_precision.cpp) one step from the same
// weights: fp32; bf16 products on fp32 activations (autocast's model); bf16 products on bf16
// activations. Storing activations in bf16 rounds every op's output (2^-8 / sqrt(3) rms
// relative each) and every gradient between ops, forward and backward: about twice as many
// roundings as the products alone make on the path from the loss to a parameter, so twice
// the autocast step's bounds of tests/test_precision.cpp: the loss to 2e-2 relative, each
// parameter's gradient to 1e-1 of its rms. The measured figures are printed.
ImageTrainConfig tiny(const std::string& precision, const std::string& activations) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o : {"base_channels=8", "groups=4", "batch_size=4", "dropout=0"})
    apply_override(j, o);
  apply_override(j, "precision=" + precision);
  apply_override(j, "activations=" + activations);
  return read_image_train_config(j, "tiny.json (test)");
}

struct StepResult {
  double loss;
  std::vector<float> grad;
};

StepResult one_step(const std::string& precision, const std::string& activations,
                    const std::string& weights) {
  ImageRun run(tiny(precision, activations));
  run.load_checkpoint(weights);
  const double loss = run.step().loss;
  StepResult r{loss, run.store().flat_grad().to_vector<float>()};
  set_precision(Precision::F32);
  set_activation_dtype(DType::F32);
  return r;
}

TEST(Bf16Storage, AStepWithBf16ActivationsStaysWithinRoundingOfTheFp32Step) {
  const std::string path = ::testing::TempDir() + "/bf16-storage.safetensors";
  std::vector<Tensor> params;
  std::vector<int64_t> offsets;
  {
    ImageRun warm(tiny("fp32", "fp32"));
    for (int i = 0; i < 3; ++i) warm.step();
    warm.save_checkpoint(path);
    params = warm.store().parameters();
    for (size_t p = 0; p < params.size(); ++p) offsets.push_back(warm.store().offset(p));
  }
  const StepResult f32 = one_step("fp32", "fp32", path);
  const StepResult autocast = one_step("bf16", "fp32", path);
  const StepResult stored = one_step("bf16", "bf16", path);
  EXPECT_NEAR(stored.loss, f32.loss, 2e-2 * f32.loss);
  auto rel_rms = [&](const std::vector<float>& a, const std::vector<float>& b, size_t p) {
    double sq = 0, diff = 0;
    for (int64_t i = offsets[p]; i < offsets[p] + params[p].numel(); ++i) {
      sq += double(b[i]) * b[i];
      diff += std::pow(double(a[i]) - b[i], 2);
    }
    return std::sqrt(diff / sq);
  };
  double worst = 0, worst_autocast = 0, from_autocast = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const double rel = rel_rms(stored.grad, f32.grad, p);
    worst = std::max(worst, rel);
    worst_autocast = std::max(worst_autocast, rel_rms(autocast.grad, f32.grad, p));
    from_autocast = std::max(from_autocast, rel_rms(stored.grad, autocast.grad, p));
    EXPECT_LT(rel, 1e-1) << "parameter " << p << " " << params[p].describe();
  }
  std::printf("bf16 activations vs fp32 step: loss %.6f vs %.6f; worst parameter gradient off "
              "by %.2e of its rms (bf16 products alone: %.2e)\n",
              stored.loss, f32.loss, worst, worst_autocast);
  EXPECT_GT(from_autocast, 0.0) << "storing activations in bf16 changed nothing";
}

TEST(Bf16Storage, Bf16ActivationsNeedBf16Products) {
  test::expect_error([] { tiny("fp32", "bf16"); }, {"activations", "precision", "bf16"});
  test::expect_error([] { tiny("bf16", "fp16"); }, {"activations", "fp16"});
}

// The backward rules on bf16 tensors (cast's, the widened ops', group norm's bf16 kernels)
// against central finite differences of the f64 op at the same (bf16-representable) inputs,
// L = sum(f(x) r) with r bf16-representable too. The bf16 gradient rounds each stored
// gradient once (2^-8 of it) and, in group norm, dh between its passes (2^-8 of each term
// of the group's sums, which cancel): per element 2^-6 of the value plus 3e-2 of the rms.
TEST(Bf16Storage, Bf16GradientsMatchFiniteDifferences) {
  set_precision(Precision::BF16);
  const Shape xs{2, 3, 3, 8};
  const auto representable = [](const Tensor& t) {  // f64 values a bf16 tensor holds exactly
    return cast(cast(t, DType::BF16), DType::F32).to(DType::F64);
  };
  const Tensor x64 = representable(test::random_tensor(xs, 60, DType::F32));
  const Tensor r64 = representable(test::random_tensor(xs, 61, DType::F32));
  const Tensor gamma = test::random_tensor(Shape{8}, 62, DType::F32, 0.5);
  const Tensor beta = test::random_tensor(Shape{8}, 63, DType::F32, 0.5);
  const Tensor w = test::random_tensor(Shape{3, 3, 8, 8}, 64, DType::F32, 0.2);
  struct Op {
    const char* name;
    std::function<Tensor(const Tensor&)> f;  // x of any float dtype -> same shape
  };
  const auto like = [](const Tensor& p, const Tensor& x) {  // a parameter in x's float type
    return x.dtype() == DType::F64 ? p.to(DType::F64) : p;
  };
  const Op ops[] = {
      {"silu (widened)", [](const Tensor& x) { return silu(x); }},
      {"group_norm_silu (bf16 kernels)",
       [&](const Tensor& x) { return group_norm_silu(x, like(gamma, x), like(beta, x), 2); }},
      {"conv2d + residual (widened)", [&](const Tensor& x) {
         return conv2d_add(x, like(w, x), Tensor(), Conv2dParams::same(3), Tensor(), x);
       }}};
  for (const Op& op : ops) {
    SCOPED_TRACE(op.name);
    Tensor x16 = cast(x64.to(DType::F32), DType::BF16);
    x16.set_requires_grad(true);
    tape().backward(op.f(x16), cast(r64.to(DType::F32), DType::BF16));
    const std::vector<float> got = cast(x16.grad(), DType::F32).to_vector<float>();
    std::vector<double> fd(got.size());
    const double h = 1e-6;
    std::vector<double> xv = x64.to_vector<double>();
    const std::vector<double> rv = r64.to_vector<double>();
    const auto loss = [&](const std::vector<double>& v) {
      NoGradGuard no_grad;
      const std::vector<double> y = op.f(Tensor::from_vector(xs, v)).to_vector<double>();
      double l = 0;
      for (size_t i = 0; i < y.size(); ++i) l += y[i] * rv[i];
      return l;
    };
    double sq = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      const double keep = xv[i];
      xv[i] = keep + h;
      const double up = loss(xv);
      xv[i] = keep - h;
      const double down = loss(xv);
      xv[i] = keep;
      fd[i] = (up - down) / (2 * h);
      sq += fd[i] * fd[i];
    }
    const double rms = std::sqrt(sq / fd.size());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], fd[i], 0x1p-6 * std::fabs(fd[i]) + 3e-2 * rms) << "element " << i;
  }
  set_precision(Precision::F32);
}

}  // namespace
}  // namespace ddpm
