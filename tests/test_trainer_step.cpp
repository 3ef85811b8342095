// A training step (DiffusionTrainer::step, step_sharded) against its definition, computed
// here from the documented pieces on a copy of the model as it was before the step:
//   shard m of M (samples [first, first + count)) draws eps from Philox stream
//   kNoiseStream + step + m 2^kShardShift; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps;
//   loss_m = (1 / count) sum_i w_{t_i} r_i mse_i   (w: loss_weights, r_i = 1 / (T p_{t_i}) the
//            importance weight of the sampler's p before the step)
//   loss = (1 / M) sum_m loss_m,  gradient = (1 / M) sum_m grad loss_m,
//   per-sample losses w_{t_i} mse_i (without r_i).
// With the importance sampler warmed up (r_i != 1) and a hybrid loss (w_t != 1), for the
// fused and the unfused loss, one shard and four. The other tests compare the paths with one
// another (fused against unfused, ranks against one process), which a rule missing from
// every path, such as the importance weights or the shards' mean, passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "models/ddpm/trainer.h"
#include "models/toy/mlp_denoiser.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

constexpr int kT = 20;
constexpr int64_t kBatch = 8, kDim = 2;

TrainerConfig recipe(bool fused) {
  TrainerConfig c;
  c.schedule.T = kT;
  c.target = Target::V;
  c.loss.kind = LossKind::Hybrid;
  c.loss.hybrid_lambda = 0.5;
  c.timestep_sampler = TimestepSamplerKind::Importance;
  c.grad_clip = 0;  // the norm reported is the gradient's own
  c.seed = 11;
  c.fused_loss = fused;
  return c;
}

struct Model {
  ParameterStore store;
  std::unique_ptr<MlpDenoiser> mlp;
  Model() {
    mlp = std::make_unique<MlpDenoiser>(store, kDim, 16, 2, 8);
    store.finalize(Device::CPU, DType::F32, 3);
  }
  Denoiser denoiser() const {
    return [this](const Tensor& x, const std::vector<int>& t) { return (*mlp)(x, t); };
  }
};

std::vector<float> batch_values() {
  return randn(Shape{kBatch, kDim}, 5, 1).to_vector<float>();
}
Tensor rows(const std::vector<float>& x, int64_t first, int64_t count) {
  return Tensor::from_vector(Shape{count, kDim},
                             std::vector<float>(x.begin() + first * kDim,
                                                x.begin() + (first + count) * kDim));
}

struct Expected {
  double loss = 0, grad_norm = 0;
  std::vector<double> per_sample;
};

// The definition above, on `before` (a model holding the weights the step started from).
Expected definition(Model& before, const TrainerConfig& c, const std::vector<float>& x0,
                    const std::vector<int>& t, const std::vector<double>& p, int64_t shards,
                    int64_t step) {
  const Schedule s = make_schedule(c.schedule);
  const std::vector<double> w = loss_weights(s, c.target, c.loss);
  const int64_t count = kBatch / shards;
  Expected e;
  std::vector<double> grad(static_cast<size_t>(before.store.flat_grad().numel()), 0.0);
  for (int64_t m = 0; m < shards; ++m) {
    const uint64_t stream = DiffusionTrainer::kNoiseStream + static_cast<uint64_t>(step) +
                            (static_cast<uint64_t>(m) << DiffusionTrainer::kShardShift);
    const std::vector<float> eps = randn(Shape{count, kDim}, c.seed, stream).to_vector<float>();
    std::vector<float> x_t, v;
    std::vector<int> tm;
    std::vector<double> coef;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t n = m * count + i;
      const double a = s.sqrt_alpha_bar[t[n]], b = s.sqrt_one_minus_alpha_bar[t[n]];
      for (int64_t d = 0; d < kDim; ++d) {
        const double x = x0[n * kDim + d], z = eps[i * kDim + d];
        x_t.push_back(static_cast<float>(a * x + b * z));
        v.push_back(static_cast<float>(a * z - b * x));
      }
      tm.push_back(t[n]);
      coef.push_back(w[t[n]] / (kT * p[t[n]]) / count);
    }
    before.store.zero_grad();
    const Tensor pred = (*before.mlp)(Tensor::from_vector(Shape{count, kDim}, x_t), tm);
    const Tensor mse = mse_per_sample(pred, Tensor::from_vector(Shape{count, kDim}, v));
    const Tensor loss = sum(mul(mse, Tensor::from_vector<double>(Shape{count}, coef).to(DType::F32)));
    backward(loss);
    e.loss += loss.item() / shards;
    const std::vector<double> mse_host = test::values(mse);
    for (int64_t i = 0; i < count; ++i) e.per_sample.push_back(w[tm[i]] * mse_host[i]);
    const std::vector<double> g = test::values(before.store.flat_grad());
    for (size_t k = 0; k < grad.size(); ++k) grad[k] += g[k] / shards;
  }
  for (double g : grad) e.grad_norm += g * g;
  e.grad_norm = std::sqrt(e.grad_norm);
  return e;
}

struct StepCase {
  bool fused;
  int64_t shards;
};

class TrainerStep : public ::testing::TestWithParam<StepCase> {};

TEST_P(TrainerStep, IsItsDefinition) {
  const StepCase sc = GetParam();
  const TrainerConfig c = recipe(sc.fused);
  Model model, before;
  DiffusionTrainer trainer(model.store, c);
  // Warm the importance sampler: every t's history of 10 filled with losses rising with t.
  for (int round = 0; round < 10; ++round) {
    std::vector<int> all(kT);
    std::vector<double> losses(kT);
    for (int t = 0; t < kT; ++t) all[t] = t, losses[t] = 0.05 + 0.01 * t * t + 0.002 * round;
    trainer.timestep_sampler().update(all, losses);
  }
  ASSERT_TRUE(trainer.timestep_sampler().warmed_up());
  const std::vector<double> p = trainer.timestep_sampler().probabilities();
  const std::vector<float> x0 = batch_values();
  const Denoiser f = model.denoiser();
  // Two steps: the second at another index, from moved weights. Step s's losses join the
  // history once step s + 1 has drawn its timesteps, so both draw, and weigh, with p.
  for (int64_t step = 0; step < 2; ++step) {
    before.store.flat_data().copy_from(model.store.flat_data());
    StepStats st;
    if (sc.shards == 1) {
      st = trainer.step(f, TrainBatch{Tensor::from_vector(Shape{kBatch, kDim}, x0)});
    } else {
      SingleProcess world;
      const int64_t count = kBatch / sc.shards;
      st = trainer.step_sharded([&](const Shard&) { return f; },
                                [&](const Shard& sh) { return TrainBatch{rows(x0, sh.first, sh.count)}; },
                                kBatch, count, world);
    }
    ASSERT_EQ(st.step, step);
    ASSERT_TRUE(st.applied);
    const Expected e = definition(before, c, x0, st.timesteps, p, sc.shards, step);
    std::vector<double> r;
    for (int t : st.timesteps) r.push_back(1.0 / (kT * p[t]));
    ASSERT_GT(*std::max_element(r.begin(), r.end()) / *std::min_element(r.begin(), r.end()), 1.5)
        << "the importance weights must differ across the batch";
    // f32 forward and backward, sums in another order: 1e-5 relative.
    EXPECT_NEAR(st.loss, e.loss, 1e-5 * e.loss) << "step " << step;
    EXPECT_NEAR(st.grad_norm, e.grad_norm, 1e-5 * e.grad_norm) << "step " << step;
    ASSERT_EQ(st.per_sample_loss.size(), e.per_sample.size());
    for (size_t i = 0; i < e.per_sample.size(); ++i)
      EXPECT_NEAR(st.per_sample_loss[i], e.per_sample[i], 1e-5 * e.per_sample[i] + 1e-9)
          << "step " << step << ", sample " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, TrainerStep,
                         ::testing::Values(StepCase{true, 1}, StepCase{false, 1},
                                           StepCase{true, 4}, StepCase{false, 4}),
                         [](const ::testing::TestParamInfo<StepCase>& param_info) {
                           return std::string(param_info.param.fused ? "fused" : "unfused") +
                                  "_" + std::to_string(param_info.param.shards) + "_shards";
                         });

}  // namespace
}  // namespace ddpm
