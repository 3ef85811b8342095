// upsample_conv3x3 (engine/ops.h): the convolution of a 2x upsampled map computed by output
// phase, as four 2x2 convolutions of the map itself with folded kernels
// (kernels/upsample_conv.h). Held to what it replaces, upsample_nearest2x then a 3x3 'same'
// conv2d: in double the two differ only by the order of the sums (the folded taps add
// weights before multiplying), far below 1e-12 of the values; its pieces each against finite
// differences; the folding and the interleaving on values worked out by hand; and under
// precision bf16, the folded kernels are what is rounded.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/flops.h"
#include "engine/ops.h"
#include "kernels/bf16.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace ddpm::test {
namespace {

using Inputs = std::vector<Tensor>;

struct Case {
  Shape x;
  int64_t c_out;
};

// Odd and one-pixel maps (every phase's window meets the padding), channels in and out
// unequal, a batch of more than one.
const Case kCases[] = {{{2, 3, 5, 4}, 6}, {{1, 1, 1, 3}, 2}, {{3, 4, 2, 1}, 5}, {{1, 6, 7, 8}, 8}};

// y, dx, dw, db of f(x, w, b) with the loss sum(y * r) (r fixed random weights, so that
// every output position counts differently).
struct Result {
  std::vector<double> y, dx, dw, db;
};
template <class F>
Result run(F f, const Case& c) {
  Tensor x = random_tensor(c.x, 1), w = random_tensor({3, 3, c.x[3], c.c_out}, 2, DType::F64, 0.3),
         b = random_tensor({c.c_out}, 3);
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const Tensor y = f(x, w, b);
  backward(sum(mul(y, random_tensor(y.shape(), 4))));
  return {values(y), values(x.grad()), values(w.grad()), values(b.grad())};
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want,
                     const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  ASSERT_GT(scale, 0.0) << what << " is all zeros: the comparison proves nothing";
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-12 * scale) << what << " element " << i;
}

TEST(UpsampleConv, EqualsUpsampleThenConvWithItsGradients) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.x.str() + " -> " + std::to_string(c.c_out));
    const Result fused = run(
        [](const Tensor& x, const Tensor& w, const Tensor& b) { return upsample_conv3x3(x, w, b); },
        c);
    const Result two_ops = run(
        [](const Tensor& x, const Tensor& w, const Tensor& b) {
          return conv2d(upsample_nearest2x(x), w, b, Conv2dParams::same(3));
        },
        c);
    expect_near_all(fused.y, two_ops.y, "y");
    expect_near_all(fused.dx, two_ops.dx, "dx");
    expect_near_all(fused.dw, two_ops.dw, "dw");
    expect_near_all(fused.db, two_ops.db, "db");
  }
}

TEST(UpsampleConv, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const Inputs& in) { return upsample_conv3x3(in[0], in[1], in[2]); },
                         {random_tensor({2, 3, 5, 3}, 1),
                          random_tensor({3, 3, 3, 4}, 2, DType::F64, 0.3), random_tensor({4}, 3)});
}

// Each of the four folded kernels carries its own gradient back (the check weighs every
// output of every phase differently).
TEST(UpsampleConv, FoldedWeightsGradientMatchesFiniteDifferences) {
  expect_gradients_match(
      [](const Inputs& in) {
        const std::vector<Tensor> f = fold_upsample_weights(in[0]);
        return concat({f[0], scale(f[1], 2.0), scale(f[2], -3.0), scale(f[3], 0.5)});
      },
      {random_tensor({3, 3, 2, 3}, 1)});
}

TEST(UpsampleConv, InterleaveGradientMatchesFiniteDifferences) {
  expect_gradients_match([](const Inputs& in) { return interleave_phases(in); },
                         {random_tensor({2, 3, 5, 3}, 1), random_tensor({2, 3, 5, 3}, 2),
                          random_tensor({2, 3, 5, 3}, 3), random_tensor({2, 3, 5, 3}, 4)});
}

// w[kh][kw] = 10^(3 kh + kw) (one channel each way): every folded tap is a distinct sum of
// powers of ten, exact in double, that names the taps it added.
TEST(UpsampleConv, FoldedTapsAreTheSumsOfTheTapsTheyCover) {
  std::vector<double> w(9);
  for (int k = 0; k < 9; ++k) w[k] = std::pow(10.0, k);
  const std::vector<Tensor> f = fold_upsample_weights(Tensor::from_vector(Shape{3, 3, 1, 1}, w));
  // phase (a, b), taps (th, tw) in (0,0), (0,1), (1,0), (1,1); rows kh: phase 0 {0}, {1,2};
  // phase 1 {0,1}, {2}; columns the same with b
  const std::vector<std::vector<double>> want = {
      {1, 10 + 100, 1000 + 1e6, 1e4 + 1e5 + 1e7 + 1e8},   // (0, 0)
      {1 + 10, 100, 1000 + 1e4 + 1e6 + 1e7, 1e5 + 1e8},   // (0, 1)
      {1 + 1000, 10 + 100 + 1e4 + 1e5, 1e6, 1e7 + 1e8},   // (1, 0)
      {1 + 10 + 1000 + 1e4, 100 + 1e5, 1e6 + 1e7, 1e8}};  // (1, 1)
  for (int p = 0; p < 4; ++p) EXPECT_EQ(values(f[p]), want[p]) << "phase " << p;
}

// Phase p's pixel (i, j) lands at (2i + a, 2j + b): phases filled with 100 p + (pixel index)
// read back in the map's order.
TEST(UpsampleConv, InterleavePutsEachPhaseOnItsParity) {
  std::vector<Tensor> phases;
  for (int p = 0; p < 4; ++p) {
    std::vector<double> v(6);
    for (int i = 0; i < 6; ++i) v[i] = 100 * p + i;  // (1, 2, 3, 1): pixel i = 3 row + col
    phases.push_back(Tensor::from_vector(Shape{1, 2, 3, 1}, v));
  }
  const std::vector<double> want = {0,   100, 1,   101, 2,   102,  // row 0: phases 0, 1
                                    200, 300, 201, 301, 202, 302,  // row 1: phases 2, 3
                                    3,   103, 4,   104, 5,   105,  //
                                    203, 303, 204, 304, 205, 305};
  EXPECT_EQ(values(interleave_phases(phases)), want);
}

// Under precision bf16 the products round the folded kernels (from their fp32 sums), not the
// 3x3 taps before they are summed: the op equals its phases run by hand on rounded folds.
TEST(UpsampleConv, Bf16RoundsTheFoldedKernels) {
  const Tensor x = random_tensor({2, 3, 4, 8}, 1, DType::F32);
  const Tensor w = random_tensor({3, 3, 8, 5}, 2, DType::F32, 0.3);
  const Tensor b = random_tensor({5}, 3, DType::F32);
  set_precision(Precision::BF16);
  const std::vector<float> got = upsample_conv3x3(x, w, b).to_vector<float>();
  const std::vector<float> per_tap =
      conv2d(upsample_nearest2x(x), w, b, Conv2dParams::same(3)).to_vector<float>();
  set_precision(Precision::F32);
  const auto rounded = [](const Tensor& t) {
    std::vector<float> v = t.to_vector<float>();
    for (float& e : v) e = round_to_bf16(e);
    return Tensor::from_vector(t.shape(), v);
  };
  const std::vector<Tensor> folded = fold_upsample_weights(w);
  std::vector<Tensor> phases;
  for (int a = 0; a < 2; ++a)
    for (int c = 0; c < 2; ++c)
      phases.push_back(
          conv2d(rounded(x), rounded(folded[2 * a + c]), b, Conv2dParams{1, 1 - a, 1 - c, a, c}));
  const std::vector<float> want = interleave_phases(phases).to_vector<float>();
  EXPECT_EQ(got, want);
  EXPECT_NE(got, per_tap);  // the rounding point is visible
}

// The model's FLOPs: the convolution of the upsampled map, forward and each gradient, what
// conv2d(upsample_nearest2x(x), ...) counts; not the 4/9 the phases multiply.
TEST(UpsampleConv, CountsTheConvolutionOfTheUpsampledMap) {
  Tensor x = random_tensor({2, 3, 5, 4}, 1, DType::F32),
         w = random_tensor({3, 3, 4, 6}, 2, DType::F32);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  const uint64_t conv = 2ull * (2 * 6 * 10 * 6) * (9 * 4);  // 2 * outputs * taps * Cin
  uint64_t before = matmul_flops();
  const Tensor y = upsample_conv3x3(x, w, Tensor());
  EXPECT_EQ(matmul_flops() - before, conv);
  before = matmul_flops();
  backward(sum(y));
  EXPECT_EQ(matmul_flops() - before, 2 * conv);  // dx and dw
}

TEST(UpsampleConv, RejectsAKernelThatIsNot3x3) {
  const Tensor x = random_tensor({1, 2, 2, 3}, 1);
  EXPECT_THROW(
      {
        try {
          upsample_conv3x3(x, random_tensor({5, 5, 3, 2}, 2), Tensor());
        } catch (const std::exception& e) {
          EXPECT_NE(std::string(e.what()).find("must be (3, 3, 3, Cout)"), std::string::npos)
              << e.what();
          throw;
        }
      },
      std::exception);
}

}  // namespace
}  // namespace ddpm::test
