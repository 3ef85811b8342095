// Precision::BF16 and TF32 on the CPU: the convolution and linear ops multiply rounded
// operands (bit for bit what the f32 ops give on operands rounded beforehand, with both CPU
// kernel sets) while the bias gradients sum the fp32 incoming gradient; and a U-Net step in
// bf16 or TF32 stays within the bound its rounding allows of the same step in fp32. The
// rounding functions themselves against hand-worked bit patterns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/file_io.h"
#include "engine/ops.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention.h"
#include "kernels/tf32.h"
#include "models/unet/image_train.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

const char* name(Precision p) { return p == Precision::BF16 ? "bf16" : "tf32"; }

Tensor rounded(const Tensor& t, Precision p) {
  std::vector<float> v = t.to_vector<float>();
  for (float& e : v) e = p == Precision::BF16 ? round_to_bf16(e) : round_to_tf32(e);
  return Tensor::from_vector(t.shape(), v);
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// TF32 keeps 10 of fp32's 23 stored mantissa bits and rounds to nearest, ties away from zero
// (cvt.rna.tf32.f32): below half of the dropped 2^13 goes down, half and above goes up, for
// either sign; infinities and NaN pass; the largest finite floats round up to infinity.
TEST(Precision, Tf32RoundsToNearestTiesAwayFromZero) {
  EXPECT_EQ(round_to_tf32(from_bits(0x3f800fffu)), from_bits(0x3f800000u));  // below half
  EXPECT_EQ(round_to_tf32(from_bits(0x3f801000u)), from_bits(0x3f802000u));  // a tie: away
  EXPECT_EQ(round_to_tf32(from_bits(0x3f803000u)), from_bits(0x3f804000u));  // tie, odd: away
  EXPECT_EQ(round_to_tf32(from_bits(0xbf801000u)), from_bits(0xbf802000u));  // negative tie
  EXPECT_EQ(round_to_tf32(1.0f + 1.0f / 1024), 1.0f + 1.0f / 1024);  // representable: kept
  EXPECT_EQ(round_to_tf32(from_bits(0x7f7fffffu)), std::numeric_limits<float>::infinity());
  EXPECT_EQ(round_to_tf32(-std::numeric_limits<float>::infinity()),
            -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(round_to_tf32(std::nanf(""))));
  // bf16 for contrast: ties to even (0x3f808000 is a tie between 0x3f80 and 0x3f81: even)
  EXPECT_EQ(round_to_bf16(from_bits(0x3f808000u)), from_bits(0x3f800000u));
}

// A TF32 value splits into two bf16 pieces that sum back to it exactly (the TF32 convolution
// on bf16 tensor cores multiplies the pieces: kernels/tf32.h): on hand-worked patterns, then
// on 2,052 mantissas across the binade (an odd step, 4089, so the 13 low bits the rounding
// drops take 2,052 different values) at five exponents and both signs; and a product of two
// TF32 values is the exact sum of its four piece products (each exact in fp32), which is
// what lets the bf16 GEMM give a TF32 GEMM's products.
TEST(Precision, Tf32SplitsIntoTwoBf16PiecesExactly) {
  const Bf16Pieces one = tf32_as_bf16_pieces(from_bits(0x3f80e000u));  // 1 + 7 * 2^-10
  EXPECT_EQ(one.hi, 0x3f80u);            // 1 + 0 * 2^-7: the top 7 mantissa bits
  EXPECT_EQ(from_bits(uint32_t{one.lo} << 16), 7.0f / 1024);  // the last 3 bits
  const Bf16Pieces rounded_first = tf32_as_bf16_pieces(from_bits(0x3f80f000u));  // a tie
  EXPECT_EQ(rounded_first.hi, 0x3f81u);  // rounded to TF32 first: 1 + 2^-7, nothing left
  EXPECT_EQ(rounded_first.lo, 0u);
  const Bf16Pieces inf = tf32_as_bf16_pieces(std::numeric_limits<float>::infinity());
  EXPECT_EQ(inf.hi, 0x7f80u);
  EXPECT_EQ(inf.lo, 0u);
  auto sum = [](Bf16Pieces p) {
    return float_from_bf16_bits(p.hi) + float_from_bf16_bits(p.lo);
  };
  int checked = 0;
  for (uint32_t mantissa = 0; mantissa < (1u << 23); mantissa += 0x1000u - 7)
    for (uint32_t exponent : {20u, 100u, 127u, 140u, 254u})  // (under 2^-123 lo's last bits
      for (uint32_t sign : {0u, 0x80000000u}) {              // may fall below fp32's range)
        const float f = from_bits(sign | exponent << 23 | mantissa);
        const float t = round_to_tf32(f);
        if (!std::isfinite(t)) continue;  // the largest round up to infinity
        ASSERT_EQ(sum(tf32_as_bf16_pieces(f)), t) << std::hex << sign << " " << exponent
                                                  << " " << mantissa;
        ++checked;
      }
  EXPECT_GT(checked, 10000);
  const float a = from_bits(0x3f80e000u), b = from_bits(0xbfc0a000u);  // -(1.5 + 5 2^-10)
  const Bf16Pieces pa = tf32_as_bf16_pieces(a), pb = tf32_as_bf16_pieces(b);
  const float ah = float_from_bf16_bits(pa.hi), al = float_from_bf16_bits(pa.lo);
  const float bh = float_from_bf16_bits(pb.hi), bl = float_from_bf16_bits(pb.lo);
  EXPECT_EQ(static_cast<double>(ah) * bh + static_cast<double>(ah) * bl +
                static_cast<double>(al) * bh + static_cast<double>(al) * bl,
            static_cast<double>(a) * b);
  EXPECT_NE(al, 0.0f);  // both values use their last 3 bits: the test would see a lost piece
  EXPECT_NE(bl, 0.0f);
}

// An fp32 value splits into three bf16 pieces that sum back to it exactly (fp32 convolutions
// on bf16 tensor cores multiply them: kernels/bf16.h, kernels/cuda/conv2d_pieces.cu). By
// hand: 1 + 2^-5 + 2^-13 + 2^-21, whose remainder 2^-13 (1 + 2^-8) is a tie mid rounds to
// even; 1 + 2^-5 + 2^-8 + 2^-9, which hi rounds up, leaving a negative mid; the largest
// float, which hi would round to infinity (kept truncated instead); infinity. Then 2,052
// mantissas across the binade (an odd step) at five exponents and both signs: the sum exact,
// |mid| <= 2^-8 |f| and |lo| <= 2^-16 |f|; and for pairs of them the six products bf16x6
// keeps within 2^-23 + 2^-32 of the exact product, the nine equal to it.
TEST(Precision, Fp32SplitsIntoThreeBf16PiecesExactly) {
  const Bf16Triple tie = fp32_as_bf16_pieces(1.0f + 0x1p-5f + 0x1p-13f + 0x1p-21f);
  EXPECT_EQ(tie.hi, 0x3f84u);  // 1 + 2^-5
  EXPECT_EQ(tie.mid, 0x3900u);  // 2^-13: 2^-13 + 2^-21 is halfway to the next bf16, ties to even
  EXPECT_EQ(tie.lo, 0x3500u);   // 2^-21
  const Bf16Triple up = fp32_as_bf16_pieces(1.0f + 0x1p-5f + 0x1p-8f + 0x1p-9f);
  EXPECT_EQ(float_from_bf16_bits(up.hi), 1.0f + 0x1p-5f + 0x1p-7f);  // 3/4 ulp: rounded up
  EXPECT_EQ(float_from_bf16_bits(up.mid), -0x1p-9f);
  EXPECT_EQ(up.lo, 0u);
  auto sum = [](Bf16Triple p) {
    return static_cast<double>(float_from_bf16_bits(p.hi)) + float_from_bf16_bits(p.mid) +
           float_from_bf16_bits(p.lo);
  };
  const float largest = std::numeric_limits<float>::max();
  const Bf16Triple top = fp32_as_bf16_pieces(largest);
  EXPECT_EQ(top.hi, 0x7f7fu);  // truncated: rounding would give infinity
  EXPECT_EQ(sum(top), static_cast<double>(largest));
  const Bf16Triple inf = fp32_as_bf16_pieces(-std::numeric_limits<float>::infinity());
  EXPECT_EQ(inf.hi, 0xff80u);
  EXPECT_EQ(inf.mid | inf.lo, 0u);
  std::vector<float> values;
  for (uint32_t mantissa = 0; mantissa < (1u << 23); mantissa += 4089)
    for (uint32_t exponent : {20u, 100u, 127u, 140u, 250u})
      for (uint32_t sign : {0u, 0x80000000u}) {
        const float f = from_bits(sign | exponent << 23 | mantissa);
        const Bf16Triple p = fp32_as_bf16_pieces(f);
        ASSERT_EQ(sum(p), static_cast<double>(f)) << std::hex << sign << " " << exponent
                                                  << " " << mantissa;
        ASSERT_LE(std::fabs(float_from_bf16_bits(p.mid)), 0x1p-8 * std::fabs(f));
        ASSERT_LE(std::fabs(float_from_bf16_bits(p.lo)), 0x1p-16 * std::fabs(f));
        if (exponent == 127u) values.push_back(f);
      }
  ASSERT_GT(values.size(), 4000u);
  int lo_used = 0;
  for (size_t i = 0; i + 1 < values.size(); i += 2) {
    const Bf16Triple a = fp32_as_bf16_pieces(values[i]), b = fp32_as_bf16_pieces(values[i + 1]);
    const double ap[3] = {float_from_bf16_bits(a.hi), float_from_bf16_bits(a.mid),
                          float_from_bf16_bits(a.lo)};
    const double bp[3] = {float_from_bf16_bits(b.hi), float_from_bf16_bits(b.mid),
                          float_from_bf16_bits(b.lo)};
    double six = 0.0, nine = 0.0;
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) {
        nine += ap[j] * bp[k];  // each product exact in double (16 bits), and their sum
        if (j + k <= 2) six += ap[j] * bp[k];
      }
    const double exact = static_cast<double>(values[i]) * values[i + 1];
    ASSERT_EQ(nine, exact);
    ASSERT_LE(std::fabs(six - exact), (0x1p-23 + 0x1p-32) * std::fabs(exact));
    lo_used += ap[2] != 0.0 && bp[2] != 0.0;
  }
  EXPECT_GT(lo_used, 1000);  // the low pieces are in play: a lost one would show above
}

struct OpRun {
  std::vector<float> y, dx, dw, db;
};

// y = op(x, w, b) and the gradients of sum(y * r), at precision p.
template <class Op>
OpRun run_op(Precision p, Op op, const Tensor& x0, const Tensor& w0, const Tensor& b0,
             const Tensor& r) {
  set_precision(p);
  Tensor x = x0.clone(), w = w0.clone(), b = b0.clone();
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const Tensor y = op(x, w, b);
  backward(sum(mul(y, r)));
  set_precision(Precision::F32);
  return {y.to_vector<float>(), x.grad().to_vector<float>(), w.grad().to_vector<float>(),
          b.grad().to_vector<float>()};
}

template <class Op>
void expect_rounded_f32(Precision p, Op op, const Shape& xs, const Shape& ws, const Shape& ys) {
  SCOPED_TRACE(name(p));
  const Tensor x = test::random_tensor(xs, 1, DType::F32);
  const Tensor w = test::random_tensor(ws, 2, DType::F32, 0.1);
  const Tensor b = test::random_tensor({ws.last()}, 3, DType::F32);
  const Tensor r = test::random_tensor(ys, 4, DType::F32);
  const OpRun bf16 = run_op(p, op, x, w, b, r);  // (or tf32)
  const OpRun pre = run_op(Precision::F32, op, rounded(x, p), rounded(w, p), b, rounded(r, p));
  const OpRun f32 = run_op(Precision::F32, op, x, w, b, r);
  EXPECT_EQ(bf16.y, pre.y);
  EXPECT_EQ(bf16.dx, pre.dx);
  EXPECT_EQ(bf16.dw, pre.dw);
  // The bias gradient sums the fp32 incoming gradient: bit for bit with the reference
  // kernels; the fast convolution's f32 bias gradient comes out of oneDNN's wgrad, which
  // sums in another order (the bf16 path takes the reference's column sum), so ~1e-6.
  if (cpu_kernels() == CpuKernels::Reference) {
    EXPECT_EQ(bf16.db, f32.db);
  } else {
    test::expect_close(bf16.db, f32.db, 1e-6, 1e-5, "db", "bf16", "f32");
  }
  EXPECT_NE(bf16.y, f32.y);    // and the rounding is real
}

TEST(Precision, ConvolutionAndLinearMultiplyRoundedOperands) {
  for (CpuKernels k : {CpuKernels::Reference, CpuKernels::Fast}) {
    if (k == CpuKernels::Fast && !cpu_fast_kernels_built()) continue;
    SCOPED_TRACE(k == CpuKernels::Fast ? "fast kernels" : "reference kernels");
    set_cpu_kernels(k);
    const Conv2dParams p = Conv2dParams::same(3);
    for (const Precision precision : {Precision::BF16, Precision::TF32}) {
      expect_rounded_f32(
          precision,
          [p](const Tensor& x, const Tensor& w, const Tensor& b) { return conv2d(x, w, b, p); },
          Shape{2, 6, 5, 7}, Shape{3, 3, 7, 9}, Shape{2, 6, 5, 9});
      expect_rounded_f32(
          precision,
          [](const Tensor& x, const Tensor& w, const Tensor& b) { return linear(x, w, b); },
          Shape{5, 3, 12}, Shape{12, 10}, Shape{5, 3, 10});
    }
  }
  set_cpu_kernels(cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference);
}

// A linear layer whose output is stored in bf16 adds its bias as the bias's bf16 value, as
// the GPU does (cuBLASLt's epilogue takes a bias of the output's type: kernels/cuda/
// linear.cuh), and its gradient is dy's fp32 sum all the same; an fp32 output adds the fp32
// bias. By hand: 1 x 1 + b with b = 2^-8 + 2^-17, whose bf16 value is 2^-8 (8 significant
// bits; TF32's 11 would keep b whole): bf16(1 + 2^-8) is a tie that rounds to the even 1,
// where bf16(1 + b) would round up to 1 + 2^-7; in fp32, 1 + b is exact.
TEST(Precision, ALinearStoredInBf16AddsItsBiasAsBf16) {
  struct Restore {
    ~Restore() { set_precision(Precision::F32); }
  } restore;
  set_precision(Precision::BF16);
  const float b_value = std::ldexp(1.0f, -8) + std::ldexp(1.0f, -17);
  Tensor w = Tensor::from_vector<float>(Shape{1, 1}, {1.0f});
  Tensor b = Tensor::from_vector<float>(Shape{1}, {b_value});
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  const Tensor x32 = Tensor::from_vector<float>(Shape{1, 1}, {1.0f});
  const Tensor y16 = linear(cast(x32, DType::BF16), w, b);
  ASSERT_EQ(y16.dtype(), DType::BF16);
  EXPECT_EQ(cast(y16, DType::F32).to_vector<float>(), std::vector<float>{1.0f});
  tape().backward(y16, Tensor::from_vector<float>(Shape{1, 1}, {0.375f}).to(DType::BF16));
  EXPECT_EQ(b.grad().to_vector<float>(), std::vector<float>{0.375f});
  EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>{0.375f});
  EXPECT_EQ(linear(x32, w, b).to_vector<float>(), std::vector<float>{1.0f + b_value});
}

// Attention under bf16: q, k, v and dout rounded by the op, P and dS by the kernels where
// they multiply (AttentionShape::bf16_probs), as the GPU's flash kernels do; TF32 leaves
// attention fp32. Held to the bound of the flash kernels' test: each output within
// 2^-8 sum_j p_ij |v_j| of the exact attention of the rounded q, k, v (the reference in
// double, once more on |v| for the bound), plus 1e-5 of it for fp32 and the fast kernels'
// exp; the gradients to 2e-2 of their rms (dS's magnitude sums are the CUDA test's). And not
// the fp32 op on pre-rounded operands: the probabilities' rounding is real.
TEST(Precision, Bf16AttentionMultipliesRoundedProbabilities) {
  for (CpuKernels k : {CpuKernels::Reference, CpuKernels::Fast}) {
    if (k == CpuKernels::Fast && !cpu_fast_kernels_built()) continue;
    SCOPED_TRACE(k == CpuKernels::Fast ? "fast kernels" : "reference kernels");
    set_cpu_kernels(k);
    AttentionShape s;
    s.b = 2;
    s.l = 37;
    s.c = 32;
    s.heads = 2;
    const Tensor qkv = test::random_tensor({s.b, s.l, 3 * s.c}, 7, DType::F32, 1.5);
    const Tensor r = test::random_tensor({s.b, s.l, s.c}, 8, DType::F32);
    const auto run = [&](Precision p, const Tensor& x0, const Tensor& weights) {
      set_precision(p);
      Tensor x = x0.clone();
      x.set_requires_grad(true);
      const Tensor y = attention(x, s.heads);
      backward(sum(mul(y, weights)));
      set_precision(Precision::F32);
      return std::make_pair(y.to_vector<float>(), x.grad().to_vector<float>());
    };
    const auto [out, grad] = run(Precision::BF16, qkv, r);
    const auto [out_pre, grad_pre] =
        run(Precision::F32, rounded(qkv, Precision::BF16), rounded(r, Precision::BF16));
    EXPECT_EQ(run(Precision::TF32, qkv, r).first, run(Precision::F32, qkv, r).first);

    std::vector<double> q_d, q_abs_v;
    for (float x : rounded(qkv, Precision::BF16).to_vector<float>()) q_d.push_back(x);
    q_abs_v = q_d;
    for (size_t i = 0; i < q_d.size(); ++i)
      if (static_cast<int64_t>(i % (3 * s.c)) >= 2 * s.c) q_abs_v[i] = std::abs(q_d[i]);
    std::vector<double> ref(s.b * s.l * s.c), lse(s.b * s.heads * s.l), mag(ref.size()),
        mag_lse(lse.size()), dref(q_d.size(), 0.0);
    cpu::attention_forward<double>(s, q_d.data(), ref.data(), lse.data());
    cpu::attention_forward<double>(s, q_abs_v.data(), mag.data(), mag_lse.data());
    const std::vector<float> r_rounded = rounded(r, Precision::BF16).to_vector<float>();
    const std::vector<double> r_d(r_rounded.begin(), r_rounded.end());
    cpu::attention_backward<double>(s, q_d.data(), lse.data(), r_d.data(), dref.data());
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_LE(std::abs(out[i] - ref[i]), (std::ldexp(1.0, -8) + 1e-5) * mag[i] + 1e-6) << i;
    test::expect_close_to_rms(grad, std::vector<float>(dref.begin(), dref.end()), 2e-2,
                              "gradient");
    EXPECT_NE(out, out_pre);
    EXPECT_NE(grad, grad_pre);
  }
  set_cpu_kernels(cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference);
}

TEST(Precision, F64IgnoresIt) {
  set_precision(Precision::BF16);
  const Tensor x = test::random_tensor({2, 4, 4, 3}, 5), w = test::random_tensor({3, 3, 3, 2}, 6);
  const Tensor y = conv2d(x, w, Tensor(), Conv2dParams::same(3));
  set_precision(Precision::F32);
  EXPECT_EQ(y.to_vector<double>(), conv2d(x, w, Tensor(), Conv2dParams::same(3)).to_vector<double>());
}

// One step of the tiny U-Net from the same trained weights (3 fp32 steps, then a
// checkpoint) in fp32 and in bf16. Each convolution or linear layer's rounding is ~3.2e-3
// of its output's rms (two operands, 2^-8 / sqrt(3) rms each); through the ~20 layers
// between the loss and the first convolution such errors add like a random walk, ~1.4e-2.
// So: the loss to 1e-2 relative, and each parameter's gradient to 5e-2 of its rms (the
// measured worst is printed). A missing rounding gives 0 difference, which the last check
// rejects; a wrong product is off by the gradient itself. Measured: loss 0.139489 vs
// 0.139488, worst parameter 1.6e-2 of its rms. TF32's unit roundoff is 2^-11, 8x smaller:
// the bounds scale with it. The activations stay fp32 here: only the products round (bf16's
// default also stores them in bf16, test_bf16_storage.cpp's step).
ImageTrainConfig tiny(const std::string& precision) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o : {"base_channels=8", "groups=4", "batch_size=4", "dropout=0",
                        "activations=fp32"})
    apply_override(j, o);
  apply_override(j, "precision=" + precision);
  return read_image_train_config(j, "tiny.json (test)");
}

TEST(Precision, ARoundedStepStaysWithinRoundingOfTheFp32Step) {
  const std::string path = ::testing::TempDir() + "/precision.safetensors";
  {
    ImageRun warm(tiny("fp32"));
    for (int i = 0; i < 3; ++i) warm.step();
    warm.save_checkpoint(path);
  }
  ImageRun f32(tiny("fp32"));
  f32.load_checkpoint(path);
  const StepStats s32 = f32.step();
  const std::vector<float> g32 = f32.store().flat_grad().to_vector<float>();
  for (const Precision prec : {Precision::BF16, Precision::TF32}) {
  SCOPED_TRACE(name(prec));
  const double scale = prec == Precision::BF16 ? 1.0 : 1.0 / 8;  // unit roundoff / 2^-8
  ImageRun b16(tiny(name(prec)));
  b16.load_checkpoint(path);
  const StepStats s16 = b16.step();
  set_precision(Precision::F32);
  EXPECT_NEAR(s16.loss, s32.loss, scale * 1e-2 * s32.loss);
  const std::vector<float> g16 = b16.store().flat_grad().to_vector<float>();
  const auto& params = f32.store().parameters();
  double worst = 0, total_diff = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const int64_t begin = f32.store().offset(p), n = params[p].numel();
    double sq = 0, diff = 0;
    for (int64_t i = 0; i < n; ++i) {
      sq += double(g32[begin + i]) * g32[begin + i];
      diff += std::pow(double(g16[begin + i]) - g32[begin + i], 2);
    }
    ASSERT_GT(sq, 0.0) << "parameter " << p << " has an all-zero gradient";
    const double rel = std::sqrt(diff / sq);
    worst = std::max(worst, rel);
    total_diff += diff;
    EXPECT_LT(rel, scale * 5e-2) << "parameter " << p << " " << params[p].describe();
  }
  std::printf("%s vs fp32 step: loss %.6f vs %.6f, worst parameter gradient off by %.2e of "
              "its rms\n", name(prec), s16.loss, s32.loss, worst);
  EXPECT_GT(total_diff, 0.0) << "the rounded step computed exactly the fp32 step";
  }
}

}  // namespace
}  // namespace ddpm
