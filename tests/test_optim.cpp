// Optimisation on the flat buffer: AdamW against a hand computation, clipping by global
// norm, the EMA (with and without warmup), the learning-rate schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/optim.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

struct Fixture {
  ParameterStore store;
  Tensor w;
  Fixture() {
    w = store.add("w", Shape{3});
    store.finalize(Device::CPU);
    w.copy_from(Tensor::from_vector<float>(Shape{3}, {1.0f, -2.0f, 0.5f}));
  }
  void set_grad(std::vector<float> g) { w.grad().copy_from(Tensor::from_vector<float>(Shape{3}, g)); }
};

TEST(Optim, AdamWMatchesAHandComputation) {
  Fixture f;
  AdamWConfig c;
  c.lr = 0.1;
  c.weight_decay = 0.01;
  AdamW opt(f.store, c);
  const std::vector<float> g1 = {0.5f, -1.0f, 2.0f}, g2 = {-0.25f, 0.5f, 1.0f};
  std::vector<double> p = {1.0, -2.0, 0.5}, m(3, 0), v(3, 0);
  int t = 0;
  for (const auto& g : {g1, g2}) {
    f.set_grad(g);
    opt.step(0.1);
    ++t;
    for (int i = 0; i < 3; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      p[i] *= 1 - 0.1 * 0.01;
      p[i] -= 0.1 / (1 - std::pow(0.9, t)) * m[i] / (std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.999, t)) + 1e-8);
    }
  }
  const std::vector<float> got = f.w.to_vector<float>();
  // f32 kernel vs this double computation: two steps of ~10 float roundings each (6e-8
  // relative) on values ~1; measured worst 1.3e-6.
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[i], p[i], 5e-6);
  EXPECT_EQ(opt.steps_taken(), 2);
}

TEST(Optim, ClipByGlobalNorm) {
  Fixture f;
  f.set_grad({3.0f, 0.0f, 4.0f});
  EXPECT_NEAR(clip_grad_norm(f.store, 10.0), 5.0, 1e-6);
  EXPECT_EQ(f.w.grad().to_vector<float>(), (std::vector<float>{3, 0, 4})) << "under the limit";
  EXPECT_NEAR(clip_grad_norm(f.store, 1.0), 5.0, 1e-6);
  const std::vector<float> g = f.w.grad().to_vector<float>();
  EXPECT_NEAR(g[0], 0.6f, 1e-6);
  EXPECT_NEAR(g[2], 0.8f, 1e-6);
}

TEST(Optim, EmaAveragesWithOptionalWarmup) {
  Fixture f;
  Ema ema(f.store, 0.9);
  f.w.copy_from(Tensor::from_vector<float>(Shape{3}, {2.0f, -2.0f, 0.5f}));
  ema.update(0);
  EXPECT_NEAR(ema.weights().to_vector<float>()[0], 0.9 * 1.0 + 0.1 * 2.0, 1e-6);
  Fixture g;
  Ema warm(g.store, 0.9, /*warmup=*/true);
  g.w.copy_from(Tensor::from_vector<float>(Shape{3}, {2.0f, -2.0f, 0.5f}));
  warm.update(0);  // decay min(0.9, 1/10) = 0.1
  EXPECT_NEAR(warm.weights().to_vector<float>()[0], 0.1 * 1.0 + 0.9 * 2.0, 1e-6);
  EXPECT_THROW(Ema(f.store, 1.0), Error);
}

TEST(Optim, LearningRateSchedule) {
  EXPECT_NEAR(learning_rate(0, 2e-4, 5000, 800000, LrDecay::Constant), 2e-4 / 5000, 1e-15);
  EXPECT_NEAR(learning_rate(4999, 2e-4, 5000, 800000, LrDecay::Constant), 2e-4, 1e-15);
  EXPECT_NEAR(learning_rate(100000, 2e-4, 5000, 800000, LrDecay::Constant), 2e-4, 1e-15);
  EXPECT_NEAR(learning_rate(10, 1.0, 10, 110, LrDecay::Cosine), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(60, 1.0, 10, 110, LrDecay::Cosine), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(110, 1.0, 10, 110, LrDecay::Cosine), 0.0, 1e-12);
  test::expect_error([] { parse_lr_decay("step"); }, {"unknown learning-rate decay 'step'"});
}

}  // namespace
}  // namespace ddpm

namespace ddpm {
namespace {

// A store of one parameter "w" of n random values on the CPU.
struct RandomStore {
  ParameterStore store;
  explicit RandomStore(int64_t n) {
    const Tensor w = store.add("w", Shape{n});
    store.finalize(Device::CPU);
    w.copy_from(test::random_tensor({n}, 1, DType::F32));
  }
};

AdamWConfig decayed() {
  AdamWConfig c;
  c.weight_decay = 0.01;
  return c;
}

// AdamW with the EMA in the same pass gives the bits of AdamW then Ema::update (the same
// per-element expressions, kernels/optim_math.h), warmup decay included.
TEST(Optim, AdamWWithTheEmaInOnePassIsTheTwoUpdates) {
  auto run = [](bool fused) {
    RandomStore r(1000);
    ParameterStore& store = r.store;
    AdamW opt(store, decayed());
    Ema ema(store, 0.999, /*warmup=*/true);
    for (int64_t k = 0; k < 4; ++k) {
      store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, static_cast<uint64_t>(k)));
      if (fused) {
        opt.step(1e-2, &ema, k);
      } else {
        opt.step(1e-2);
        ema.update(k);
      }
    }
    return std::make_pair(store.flat_data().to_vector<float>(), ema.weights().to_vector<float>());
  };
  const auto fused = run(true), separate = run(false);
  EXPECT_EQ(fused.first, separate.first);
  EXPECT_EQ(fused.second, separate.second);
  EXPECT_NE(fused.second, fused.first);  // the EMA lags the weights: it was really updated
}

// The trainer's way: the gradient's summary (norm, clip factor, verdict) computed where the
// gradient lives, then AdamW+EMA gated and clipped by it in one pass. Bit for bit the
// host-side way (clip_grad_norm scaling the gradient in place, then the step), clipping or
// not; and the summary holds what it says.
TEST(Optim, AGatedStepIsClipThenStepBitForBit) {
  struct State {
    std::vector<float> param, m, v, ema;
    std::vector<double> norms;
    int64_t steps = 0;
  };
  auto run = [](bool gated) {
    RandomStore r(1000);
    ParameterStore& store = r.store;
    AdamW opt(store, decayed());
    Ema ema(store, 0.999, /*warmup=*/true);
    State s;
    for (int64_t k = 0; k < 4; ++k) {
      store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, static_cast<uint64_t>(k)));
      const double max_norm = k % 2 ? 1e3 : 10.0;  // ~sqrt(1000) = 32: clip on even k only
      if (gated) {
        const Tensor per_sample = Tensor::from_vector<float>(Shape{3}, {0.5f, 1.5f, 2.5f});
        const Tensor loss = Tensor::from_vector<float>(Shape{}, {1.5f});
        const Tensor summary = step_summary(store, per_sample, loss, max_norm);
        opt.gated_step(1e-2, summary, &ema, k);
        const std::vector<double> back = summary.to_vector<double>();
        const StepGate g = summary_gate(back);
        EXPECT_EQ(back.size(), 3u + kStepGateDoubles);
        EXPECT_EQ(std::vector<double>(back.begin(), back.begin() + 3),
                  (std::vector<double>{0.5, 1.5, 2.5}));
        EXPECT_EQ(g.loss, 1.5);
        EXPECT_EQ(g.applied, 1.0);
        EXPECT_EQ(g.clip_scale, g.grad_norm > max_norm ? max_norm / g.grad_norm : 1.0);
        EXPECT_EQ(g.clip_scale < 1, k % 2 == 0) << "the test means to clip on even steps";
        if (g.applied) opt.count_applied_step();
        s.norms.push_back(g.grad_norm);
      } else {
        s.norms.push_back(clip_grad_norm(store, max_norm));
        opt.step(1e-2, &ema, k);
      }
    }
    s.param = store.flat_data().to_vector<float>();
    s.m = opt.first_moment().to_vector<float>();
    s.v = opt.second_moment().to_vector<float>();
    s.ema = ema.weights().to_vector<float>();
    s.steps = opt.steps_taken();
    return s;
  };
  const State gated = run(true), host = run(false);
  EXPECT_EQ(gated.param, host.param);
  EXPECT_EQ(gated.m, host.m);
  EXPECT_EQ(gated.v, host.v);
  EXPECT_EQ(gated.ema, host.ema);
  EXPECT_EQ(gated.norms, host.norms);
  EXPECT_EQ(gated.steps, 4);
  EXPECT_EQ(host.steps, 4);
}

// A step whose loss or gradient is not finite is not applied: the weights, both moments and
// the EMA keep every bit, and the verdict says so.
TEST(Optim, AGateThatRefusesAStepChangesNothing) {
  RandomStore r(100);
  ParameterStore& store = r.store;
  AdamW opt(store, AdamWConfig{});
  Ema ema(store, 0.9);
  store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, 0));
  opt.step(1e-2, &ema, 0);  // nonzero moments, an EMA apart from the weights
  const auto snapshot = [&] {
    return std::vector<std::vector<float>>{
        store.flat_data().to_vector<float>(), opt.first_moment().to_vector<float>(),
        opt.second_moment().to_vector<float>(), ema.weights().to_vector<float>()};
  };
  const auto before = snapshot();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  struct Case {
    const char* what;
    float loss, grad0;
  };
  for (const Case& c : {Case{"NaN loss", nan, 0.5f}, Case{"infinite loss", inf, 0.5f},
                        Case{"NaN gradient", 1.0f, nan}, Case{"infinite gradient", 1.0f, inf}}) {
    SCOPED_TRACE(c.what);
    std::vector<float> g = randn(store.flat_grad().shape(), 9, 1).to_vector<float>();
    g[0] = c.grad0;
    store.flat_grad().copy_from(Tensor::from_vector<float>(store.flat_grad().shape(), g));
    const Tensor summary =
        step_summary(store, Tensor(), Tensor::from_vector<float>(Shape{}, {c.loss}), 1.0);
    opt.gated_step(1e-2, summary, &ema, 1);
    EXPECT_EQ(summary_gate(summary.to_vector<double>()).applied, 0.0);
    EXPECT_EQ(snapshot(), before);
  }
  EXPECT_EQ(opt.steps_taken(), 1);
}

}  // namespace
}  // namespace ddpm
