// Tape semantics: accumulation, missing backward rules, no-grad scopes, release of saved
// tensors, and misuse errors.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/bf16.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

Tensor leaf(std::vector<double> v) {
  Tensor t = Tensor::from_vector<double>(Shape{static_cast<int64_t>(v.size())}, v);
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, TensorUsedTwiceAccumulates) {
  Tensor x = leaf({1.0, -2.0, 3.0});
  backward(sum(add(x, x)));  // d/dx sum(2x) = 2
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 2, 2}));
  backward(sum(mul(x, x)));  // grads accumulate across backward calls: 2 + 2x
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, -2, 8}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, ChainRuleThroughSeveralOps) {
  Tensor x = leaf({0.5, 2.0});
  Tensor y = leaf({3.0, -1.0});
  // L = sum(scale(x*y, 3) + y) -> dL/dx = 3y, dL/dy = 3x + 1
  backward(sum(add(scale(mul(x, y), 3.0), y)));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{9, -3}));
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{2.5, 7}));
}

TEST(Autograd, OnlyInputsThatRequireGradGetOne) {
  Tensor x = leaf({1.0, 2.0});
  Tensor c = Tensor::from_vector<double>(Shape{2}, {5.0, 6.0});
  backward(sum(mul(x, c)));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 6}));
  EXPECT_FALSE(c.requires_grad());
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, MissingBackwardRuleNamesTheOp) {
  Tensor t = leaf({1.0, 2.0});
  Tensor emb = timestep_embedding(t, 4);
  expect_error([&] { backward(sum(emb)); }, {"timestep_embedding", "no backward rule"});
  EXPECT_EQ(tape().size(), 0u) << "a failed backward must not leave nodes behind";
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor x = leaf({1.0, 2.0});
  tape().clear();
  Tensor y;
  {
    NoGradGuard no_grad;
    y = silu(mul(x, x));
    EXPECT_EQ(tape().size(), 0u);
    EXPECT_FALSE(y.requires_grad());
  }
  EXPECT_TRUE(tape().enabled());
  Tensor z = silu(x);
  EXPECT_EQ(tape().size(), 1u);
  EXPECT_TRUE(z.requires_grad());
  expect_error([&] { backward(sum(y)); }, {"does not require grad"});
  tape().clear();
}

TEST(Autograd, SavedTensorsAreFreedAfterBackward) {
  Tensor x = leaf({1.0, 2.0, 3.0});
  std::weak_ptr<TensorImpl> saved;
  Tensor loss;
  {
    Tensor h = silu(x);     // mul saves h (twice) for its backward
    saved = h.impl_ptr();
    loss = sum(mul(h, h));
  }
  EXPECT_FALSE(saved.expired()) << "the tape holds what mul's backward needs";
  const size_t recorded = tape().size();
  EXPECT_EQ(recorded, 3u);
  backward(loss);
  EXPECT_TRUE(saved.expired()) << "backward must release saved tensors";
  EXPECT_EQ(tape().size(), 0u);
  x.zero_grad();
}

TEST(Autograd, OutputsNotSavedByAnyRuleAreNotKeptAlive) {
  // add saves nothing: its output's storage may go as soon as the caller drops it, even
  // though the tape still needs a place for its gradient.
  Tensor x = leaf({1.0, 2.0});
  std::weak_ptr<Storage> storage;
  Tensor loss;
  {
    Tensor h = add(x, x);
    storage = h.impl().storage;
    loss = sum(h);
  }
  EXPECT_TRUE(storage.expired());
  backward(loss);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 2}));
}

TEST(Autograd, ExplicitSeedForNonScalarRoot) {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = scale(x, 3.0);
  expect_error([&] { tape().backward(y); }, {"needs an explicit seed"});
  Tensor y2 = scale(x, 3.0);
  tape().backward(y2, Tensor::from_vector<double>(Shape{2}, {1.0, 10.0}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 30}));
}

// The first contribution to a gradient (engine/autograd.h): a target is new (Assign, its
// buffer uninitialised) exactly once; a handed-over tensor becomes the gradient itself and
// a borrowed one is copied; later contributions add.
TEST(Autograd, AFirstGradientIsWrittenOutrightOrHandedOver) {
  Tensor x = leaf({1.0, 2.0});
  const GradRef slot = grad_ref(x);
  const GradTarget first = grad_target(slot), second = grad_target(slot);
  EXPECT_EQ(first.write, GradWrite::Assign);
  EXPECT_EQ(second.write, GradWrite::Accumulate);
  EXPECT_EQ(first.buffer.raw(), second.buffer.raw());
  EXPECT_EQ(first.for_accumulating().to_vector<double>(), (std::vector<double>{0, 0}));
  EXPECT_FALSE(grad_target(nullptr).buffer.defined());

  Tensor a = leaf({1.0, 2.0}), b = leaf({1.0, 2.0});
  const Tensor g = Tensor::from_vector<double>(Shape{2}, {3.0, 4.0});
  detail::add_to_grad(grad_ref(a), g, detail::GradSource::HandOver);
  EXPECT_EQ(a.grad().raw(), g.raw());  // no copy
  detail::add_to_grad(grad_ref(b), g, detail::GradSource::Borrowed);
  EXPECT_NE(b.grad().raw(), g.raw());
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{3, 4}));
  detail::add_to_grad(grad_ref(b), g, detail::GradSource::HandOver);  // a sum now
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{6, 8}));

  // An f32 contribution to a bf16 gradient (cast's rule): converted, rounded once as adding
  // it to zeros would round it
  Tensor c = Tensor::from_vector<float>(Shape{2}, {1, 2}).to(DType::BF16);
  c.set_requires_grad(true);
  const Tensor g32 = Tensor::from_vector<float>(Shape{2}, {1.0f / 3, -3.0f});
  detail::add_to_grad(grad_ref(c), g32, detail::GradSource::Borrowed);
  ASSERT_EQ(c.grad().dtype(), DType::BF16);
  EXPECT_EQ(c.grad().to(DType::F32).to_vector<float>(),
            (std::vector<float>{round_to_bf16(1.0f / 3), -3.0f}));
}

// add hands its output's gradient to one input and copies it for the other: the two
// gradients must not share storage, or a later contribution to one would change both (here
// mul's to a, whose rule runs after add's: it was recorded before).
TEST(Autograd, AddGivesEachInputAGradientOfItsOwn) {
  Tensor a = leaf({1.0, 2.0}), b = leaf({3.0, 4.0});
  const Tensor squares = mul(a, a);
  backward(sum(add(add(a, b), squares)));  // dL/da = 1 + 2a, dL/db = 1
  EXPECT_NE(a.grad().raw(), b.grad().raw());
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{3, 5}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1, 1}));
}

}  // namespace
}  // namespace ddpm
