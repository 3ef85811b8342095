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

// Betas and decays near 1 are taken as 1 - beta in double, rounded once (PyTorch passes
// 1 - beta2 to addcmul_ alike): float(0.999999999) is 1, and 1.0f - beta2 = 0 kept v at 0, so
// the first step moved each weight by lr m / eps (1e5 lr here) instead of lr.
TEST(Optim, BetasAndDecaysNearOneKeepTheirDistanceFromOne) {
  Fixture f;
  AdamWConfig c;
  c.lr = 0.1;
  c.beta1 = 0.999999;
  c.beta2 = 0.999999999;
  AdamW opt(f.store, c);
  f.set_grad({0.5f, -1.0f, 2.0f});
  opt.step(0.1);
  // m^ = g and v^ = g^2 at the first step: each weight moves by lr g / (|g| + eps)
  const std::vector<float> got = f.w.to_vector<float>();
  const std::vector<double> want = {1.0 - 0.1, -2.0 + 0.1, 0.5 - 0.1};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  // The EMA's rate 1 - decay: 1e-8 moves an average of 1 towards 1e4 by 1e-4 (float(decay)
  // is 1, and the old 1.0f - decay left it at 1).
  Fixture g;
  Ema ema(g.store, 0.99999999);
  g.w.copy_from(Tensor::from_vector<float>(Shape{3}, {1e4f, -2.0f, 0.5f}));
  ema.update(0);
  EXPECT_NEAR(ema.weights().to_vector<float>()[0], 1.0 + 1e-8 * (1e4 - 1.0), 2e-7);
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

// What an optimiser run leaves: the weights, both moments, the EMA and the step count.
struct OptimState {
  std::vector<float> param, m, v, ema;
  int64_t steps = 0;
  OptimState() = default;
  OptimState(const ParameterStore& store, const AdamW& opt, const Ema& average)
      : param(store.flat_data().to_vector<float>()),
        m(opt.first_moment().to_vector<float>()),
        v(opt.second_moment().to_vector<float>()),
        ema(average.weights().to_vector<float>()),
        steps(opt.steps_taken()) {}
};

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
    OptimState end;
    std::vector<double> norms;
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
        const Tensor summary = opt.step_summary(per_sample, loss, max_norm);
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
        opt.resolve_gated_step(g);
        s.norms.push_back(g.grad_norm);
      } else {
        s.norms.push_back(clip_grad_norm(store, max_norm));
        opt.step(1e-2, &ema, k);
      }
    }
    s.end = OptimState(store, opt, ema);
    return s;
  };
  const State gated = run(true), host = run(false);
  EXPECT_EQ(gated.end.param, host.end.param);
  EXPECT_EQ(gated.end.m, host.end.m);
  EXPECT_EQ(gated.end.v, host.end.v);
  EXPECT_EQ(gated.end.ema, host.end.ema);
  EXPECT_EQ(gated.norms, host.norms);
  EXPECT_EQ(gated.end.steps, 4);
  EXPECT_EQ(host.end.steps, 4);
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
        opt.step_summary(Tensor(), Tensor::from_vector<float>(Shape{}, {c.loss}), 1.0);
    opt.gated_step(1e-2, summary, &ema, 1);
    const StepGate gate = summary_gate(summary.to_vector<double>());
    EXPECT_EQ(gate.applied, 0.0);
    opt.resolve_gated_step(gate);
    EXPECT_EQ(snapshot(), before);
  }
  EXPECT_EQ(opt.steps_taken(), 1);
}


// A gate counts the steps it applies on the parameters' device, so the update of step k + 1
// has its bias corrections before the host has read step k's verdict. Steps queued one ahead
// of the host (step k + 1's gate and update queued before step k's gate is read) give the
// bits of steps resolved at once, and of the host's own clip-then-step that leaves the
// refused step out; the gates carry 1 - beta^t for the t applied so far.
TEST(Optim, GatesCountTheAppliedStepsAheadOfTheHost) {
  constexpr int kSteps = 6, kNanStep = 2;
  enum Way { Resolved, QueuedAhead, Host };
  struct State {
    OptimState end;
    std::vector<StepGate> gates;
  };
  const AdamWConfig config = decayed();
  auto run = [&](Way way) {
    RandomStore r(1000);
    ParameterStore& store = r.store;
    AdamW opt(store, config);
    Ema ema(store, 0.999, /*warmup=*/true);
    State s;
    std::vector<Tensor> unread;
    auto resolve_oldest = [&] {
      const StepGate g = summary_gate(unread.front().to_vector<double>());
      opt.resolve_gated_step(g);
      s.gates.push_back(g);
      unread.erase(unread.begin());
    };
    for (int64_t k = 0; k < kSteps; ++k) {
      store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, static_cast<uint64_t>(k)));
      const float loss = k == kNanStep ? std::nanf("") : 1.0f;
      if (way == Host) {
        const double norm = clip_grad_norm(store, 10.0);
        if (std::isfinite(loss) && std::isfinite(norm)) opt.step(1e-2, &ema, k);
        continue;
      }
      unread.push_back(opt.step_summary(Tensor(), Tensor::from_vector<float>(Shape{}, {loss}), 10.0));
      opt.gated_step(1e-2, unread.back(), &ema, k);
      EXPECT_EQ(opt.unresolved_steps(), static_cast<int64_t>(unread.size()));
      if (way == Resolved || unread.size() == 2) resolve_oldest();
    }
    while (!unread.empty()) resolve_oldest();
    s.end = OptimState(store, opt, ema);
    return s;
  };
  const State resolved = run(Resolved), ahead = run(QueuedAhead), host = run(Host);
  for (const State* other : {&ahead, &host}) {
    EXPECT_EQ(other->end.param, resolved.end.param);
    EXPECT_EQ(other->end.m, resolved.end.m);
    EXPECT_EQ(other->end.v, resolved.end.v);
    EXPECT_EQ(other->end.ema, resolved.end.ema);
    EXPECT_EQ(other->end.steps, kSteps - 1);
  }
  ASSERT_EQ(ahead.gates.size(), static_cast<size_t>(kSteps));
  int64_t t = 0;
  for (int k = 0; k < kSteps; ++k) {
    const StepGate& g = ahead.gates[k];
    EXPECT_EQ(g.applied, k == kNanStep ? 0.0 : 1.0) << k;
    if (g.applied) ++t;
    EXPECT_EQ(g.bias_correction1, resolved.gates[k].bias_correction1) << k;
    EXPECT_EQ(g.bias_correction2, resolved.gates[k].bias_correction2) << k;
    // beta^t by t multiplications: within a few ulp of pow
    EXPECT_NEAR(g.bias_correction1, 1 - std::pow(config.beta1, t), 1e-15) << k;
    EXPECT_NEAR(g.bias_correction2, 1 - std::pow(config.beta2, t), 1e-15) << k;
  }
}

// Refusal::Halt (the trainer's "nonfinite": "stop"): after a refused step every later gate
// refuses, so a step queued behind the refused one changes nothing either; setting the step
// count (a resumed checkpoint) lifts the halt. Refusal::Skip applies that later step.
TEST(Optim, AHaltingRefusalRefusesEveryLaterGate) {
  for (const Refusal refusal : {Refusal::Halt, Refusal::Skip}) {
    SCOPED_TRACE(refusal == Refusal::Halt ? "halt" : "skip");
    RandomStore r(100);
    ParameterStore& store = r.store;
    AdamW opt(store, AdamWConfig{});
    auto gated = [&](float loss, uint64_t k) {
      store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, k));
      const Tensor summary =
          opt.step_summary(Tensor(), Tensor::from_vector<float>(Shape{}, {loss}), 0.0, refusal);
      opt.gated_step(1e-2, summary);
      return summary;
    };
    const StepGate first = summary_gate(gated(1.0f, 0).to_vector<double>());
    opt.resolve_gated_step(first);
    const std::vector<float> before = store.flat_data().to_vector<float>();
    const Tensor refused = gated(std::nanf(""), 1);
    const Tensor behind = gated(1.0f, 2);  // queued before the refusal is read
    opt.resolve_gated_step(summary_gate(refused.to_vector<double>()));
    const StepGate g = summary_gate(behind.to_vector<double>());
    opt.resolve_gated_step(g);
    if (refusal == Refusal::Halt) {
      EXPECT_EQ(g.applied, 0.0);
      EXPECT_EQ(store.flat_data().to_vector<float>(), before);
      EXPECT_EQ(opt.steps_taken(), 1);
      opt.set_steps_taken(opt.steps_taken());  // as a resume does
      EXPECT_EQ(summary_gate(gated(1.0f, 3).to_vector<double>()).applied, 1.0);
    } else {
      EXPECT_EQ(g.applied, 1.0);
      EXPECT_NE(store.flat_data().to_vector<float>(), before);
      EXPECT_EQ(opt.steps_taken(), 2);
      EXPECT_EQ(g.bias_correction1, 1 - 0.9 * 0.9);  // two steps applied
      EXPECT_EQ(first.bias_correction1, 1 - 0.9);
    }
  }
}

// The host's count checks each gate it resolves: gates read out of order, or a plain step
// while gated ones are unresolved, are errors that say so.
TEST(Optim, GatesResolvedOutOfOrderAreAnError) {
  RandomStore r(100);
  ParameterStore& store = r.store;
  AdamW opt(store, AdamWConfig{});
  std::vector<Tensor> summaries;
  for (uint64_t k = 0; k < 2; ++k) {
    store.flat_grad().copy_from(randn(store.flat_grad().shape(), 9, k));
    summaries.push_back(opt.step_summary(Tensor(), Tensor::from_vector<float>(Shape{}, {1.0f}), 0.0));
    opt.gated_step(1e-2, summaries.back());
  }
  test::expect_error([&] { opt.step(1e-2); }, {"AdamW::step", "2 gated steps not yet resolved"});
  test::expect_error([&] { opt.resolve_gated_step(summary_gate(summaries[1].to_vector<double>())); },
                     {"bias corrections", "out of order"});
}

}  // namespace
}  // namespace ddpm
