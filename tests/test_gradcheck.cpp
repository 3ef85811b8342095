// Every backward rule against central finite differences, in double, on awkward shapes
// (odd maps like 5x7, 3 or 65 channels, batch 3, partial blocks of the CPU kernels' loops).
// Tolerances: see tests/gradcheck.h.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace ddpm::test {
namespace {

using Inputs = std::vector<Tensor>;

TEST(GradCheck, Add) {
  expect_gradients_match([](const Inputs& in) { return add(in[0], in[1]); },
                         {random_tensor({3, 5, 7}, 1), random_tensor({3, 5, 7}, 2)});
}

TEST(GradCheck, Mul) {
  expect_gradients_match([](const Inputs& in) { return mul(in[0], in[1]); },
                         {random_tensor({3, 5, 7}, 1), random_tensor({3, 5, 7}, 2)});
}

TEST(GradCheck, Scale) {
  expect_gradients_match([](const Inputs& in) { return scale(in[0], -0.37); },
                         {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, BroadcastAddPerChannel) {
  expect_gradients_match([](const Inputs& in) { return broadcast_add(in[0], in[1]); },
                         {random_tensor({3, 2, 3, 65}, 1), random_tensor({65}, 2)});
}

TEST(GradCheck, BroadcastAddPerSample) {
  expect_gradients_match([](const Inputs& in) { return broadcast_add(in[0], in[1]); },
                         {random_tensor({3, 5, 7, 6}, 1), random_tensor({3, 6}, 2)});
}

TEST(GradCheck, Silu) {
  expect_gradients_match([](const Inputs& in) { return silu(in[0]); },
                         {random_tensor({3, 5, 7, 3}, 1, DType::F64, 3.0)});
}

TEST(GradCheck, Clamp) {
  // Values within 1e-6 of the bounds would straddle the kink; N(0, 1) draws at this size
  // stay clear of +-0.8 by far more than h = 1e-6 (checked: the test is deterministic).
  expect_gradients_match([](const Inputs& in) { return clamp(in[0], -0.8, 0.8); },
                         {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, Linear) {
  // 19 rows: a full block of 16 and a partial one.
  expect_gradients_match([](const Inputs& in) { return linear(in[0], in[1], in[2]); },
                         {random_tensor({19, 7}, 1), random_tensor({7, 5}, 2),
                          random_tensor({5}, 3)});
}

TEST(GradCheck, LinearNoBias4D) {
  expect_gradients_match([](const Inputs& in) { return linear(in[0], in[1], Tensor()); },
                         {random_tensor({3, 5, 7, 3}, 1), random_tensor({3, 4}, 2)});
}

struct ConvCase {
  const char* name;
  int64_t n, h, w, c_in, c_out;
  int k;
  Conv2dParams params;
};

// Names the case in test output instead of dumping its bytes.
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

class GradCheckConv2d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(GradCheckConv2d, InputWeightBias) {
  const ConvCase c = GetParam();
  const Conv2dParams p = c.params;
  expect_gradients_match([p](const Inputs& in) { return conv2d(in[0], in[1], in[2], p); },
                         {random_tensor({c.n, c.h, c.w, c.c_in}, 1),
                          random_tensor({c.k, c.k, c.c_in, c.c_out}, 2, DType::F64, 0.3),
                          random_tensor({c.c_out}, 3)});
}

// conv2d_add: the per-sample addend v (N, Cout) and the residual r as well.
TEST_P(GradCheckConv2d, WithPerSampleAndResidualAdds) {
  const ConvCase c = GetParam();
  const Conv2dParams p = c.params;
  const Conv2dShape s = conv2d_shape(Shape{c.n, c.h, c.w, c.c_in}, Shape{c.k, c.k, c.c_in, c.c_out}, p);
  expect_gradients_match(
      [p](const Inputs& in) { return conv2d_add(in[0], in[1], in[2], p, in[3], in[4]); },
      {random_tensor({c.n, c.h, c.w, c.c_in}, 1),
       random_tensor({c.k, c.k, c.c_in, c.c_out}, 2, DType::F64, 0.3), random_tensor({c.c_out}, 3),
       random_tensor({c.n, c.c_out}, 4), random_tensor({s.n, s.out_h(), s.out_w(), s.c_out}, 5)});
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GradCheckConv2d,
    ::testing::Values(
        ConvCase{"k3_s1_same_5x7", 3, 5, 7, 3, 4, 3, Conv2dParams::same(3)},
        ConvCase{"k3_s2_tf_same_6x8", 2, 6, 8, 3, 5, 3, Conv2dParams::downsample()},
        ConvCase{"k3_s2_odd_5x7", 2, 5, 7, 2, 3, 3, Conv2dParams{2, 1, 1, 1, 1}},
        ConvCase{"k1_s1_65ch", 2, 3, 5, 65, 3, 1, Conv2dParams{}},
        ConvCase{"k3_s1_nopad_asym", 1, 5, 6, 9, 2, 3, Conv2dParams{1, 0, 2, 1, 0}},
        // stride 2 on a 2-wide map: the kernel's last column meets only the right padding
        ConvCase{"k3_s2_tap_in_padding_3x2", 1, 3, 2, 2, 3, 3, Conv2dParams::downsample()}),
    [](const ::testing::TestParamInfo<ConvCase>& param_info) {
      return std::string(param_info.param.name);
    });

// x as both the convolution's input and its residual, y = conv(x) + x: two contributions to
// one gradient from one rule (the convolution's dx, then the residual added onto it).
TEST(GradCheck, Conv2dWithItsInputAsTheResidual) {
  expect_gradients_match(
      [](const Inputs& in) {
        return conv2d_add(in[0], in[1], in[2], Conv2dParams::same(3), Tensor(), in[0]);
      },
      {random_tensor({2, 5, 7, 4}, 1), random_tensor({3, 3, 4, 4}, 2, DType::F64, 0.3),
       random_tensor({4}, 3)});
}

TEST(GradCheck, GroupNorm) {
  // 3 groups of 4 channels over a 5x7 map, batch 3; gamma and beta away from (1, 0).
  expect_gradients_match(
      [](const Inputs& in) { return group_norm(in[0], in[1], in[2], 3, 1e-6); },
      {random_tensor({3, 5, 7, 12}, 1, DType::F64, 2.0), random_tensor({12}, 2),
       random_tensor({12}, 3)});
}

TEST(GradCheck, GroupNormSiluFused) {
  expect_gradients_match(
      [](const Inputs& in) { return group_norm_silu(in[0], in[1], in[2], 3, 1e-6); },
      {random_tensor({3, 5, 7, 12}, 1, DType::F64, 2.0), random_tensor({12}, 2),
       random_tensor({12}, 3)});
}

TEST(GradCheck, GroupNormSiluDropoutFused) {
  expect_gradients_match(
      [](const Inputs& in) { return group_norm_silu_dropout(in[0], in[1], in[2], 3, 0.25, 5, 9); },
      {random_tensor({3, 5, 7, 12}, 1, DType::F64, 2.0), random_tensor({12}, 2),
       random_tensor({12}, 3)});
}

TEST(GradCheck, GroupNormOneChannelPerGroup) {
  expect_gradients_match(
      [](const Inputs& in) { return group_norm(in[0], in[1], in[2], 5, 1e-6); },
      {random_tensor({2, 3, 3, 5}, 1), random_tensor({5}, 2), random_tensor({5}, 3)});
}

TEST(GradCheck, UpsampleNearest2x) {
  expect_gradients_match([](const Inputs& in) { return upsample_nearest2x(in[0]); },
                         {random_tensor({3, 5, 7, 3}, 1)});
}

TEST(GradCheck, Concat) {
  expect_gradients_match([](const Inputs& in) { return concat({in[0], in[1], in[2]}); },
                         {random_tensor({3, 5, 7, 3}, 1), random_tensor({3, 5, 7, 1}, 2),
                          random_tensor({3, 5, 7, 4}, 3)});
}

// One input twice: its gradient's first part is copied in, the second added.
TEST(GradCheck, ConcatOfOneTensorTwice) {
  expect_gradients_match([](const Inputs& in) { return concat({in[0], in[1], in[0]}); },
                         {random_tensor({3, 5, 7, 3}, 1), random_tensor({3, 5, 7, 2}, 2)});
}

TEST(GradCheck, Split) {
  // The parts are recombined with different weights so each part's gradient path is checked.
  expect_gradients_match(
      [](const Inputs& in) {
        std::vector<Tensor> parts = split(in[0], {2, 5});
        return concat({scale(parts[1], 2.0), parts[0]});
      },
      {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, Reshape) {
  expect_gradients_match([](const Inputs& in) { return silu(reshape(in[0], Shape{15, 7})); },
                         {random_tensor({3, 5, 7}, 1)});
}

// Two views of x: the first gradient to arrive becomes x's, the second is added onto it.
TEST(GradCheck, ReshapedTwice) {
  expect_gradients_match(
      [](const Inputs& in) {
        return add(silu(reshape(in[0], Shape{15, 7})), scale(reshape(in[0], Shape{15, 7}), 3.0));
      },
      {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, AttentionSingleHead) {
  // 9 tokens (a 3x3 map), C = 6, head dim = C.
  expect_gradients_match([](const Inputs& in) { return attention(in[0], 1); },
                         {random_tensor({2, 9, 18}, 1)});
}

TEST(GradCheck, AttentionMultiHead) {
  // 3 heads of 3 channels, 7 tokens, batch 3.
  expect_gradients_match([](const Inputs& in) { return attention(in[0], 3); },
                         {random_tensor({3, 7, 27}, 1)});
}

TEST(GradCheck, Sum) {
  expect_gradients_match([](const Inputs& in) { return sum(in[0]); },
                         {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, Mean) {
  expect_gradients_match([](const Inputs& in) { return mean(in[0]); },
                         {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, Mse) {
  expect_gradients_match([](const Inputs& in) { return mse(in[0], in[1]); },
                         {random_tensor({3, 5, 7}, 1), random_tensor({3, 5, 7}, 2)});
}

TEST(GradCheck, MsePerSample) {
  expect_gradients_match([](const Inputs& in) { return mse_per_sample(in[0], in[1]); },
                         {random_tensor({3, 5, 7}, 1), random_tensor({3, 5, 7}, 2)});
}

TEST(GradCheck, PerSampleAxpby) {
  const Tensor a = Tensor::from_vector<double>(Shape{3}, {0.5, -1.5, 2.0});
  const Tensor b = Tensor::from_vector<double>(Shape{3}, {1.25, 0.75, -0.3});
  expect_gradients_match(
      [a, b](const Inputs& in) { return per_sample_axpby(a, in[0], b, in[1]); },
      {random_tensor({3, 5, 2}, 1), random_tensor({3, 5, 2}, 2)});
}

TEST(GradCheck, Dropout) {
  // The mask is fixed by (seed, stream), so the op is linear in x and checkable.
  expect_gradients_match([](const Inputs& in) { return dropout(in[0], 0.3, 7, 11); },
                         {random_tensor({3, 5, 7}, 1)});
}

TEST(GradCheck, TapeAccumulatesThroughReuse) {
  // x feeds three paths: the tape must add all three contributions.
  expect_gradients_match(
      [](const Inputs& in) { return add(mul(in[0], in[0]), silu(in[0])); },
      {random_tensor({4, 5}, 1)});
}

}  // namespace
}  // namespace ddpm::test
