// DDPM end to end on 2-D data: for every target and both schedules a short CPU run must bring
// the samples' sliced W1 distance to held-out data well below that of Gaussian noise. Plus
// the pieces around it: datasets, the metric, config validation, outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "engine/file_io.h"
#include "engine/ops.h"
#include "models/config_reader.h"
#include "models/toy/datasets2d.h"
#include "models/toy/metrics2d.h"
#include "models/toy/mlp_denoiser.h"
#include "models/toy/toy_train.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

nlohmann::json moons_config() {
  return load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/moons.json");
}

// The short budget of the end-to-end tests: 3000 steps of batch 128 on a 2-layer, 64-wide
// MLP, 1000 samples with all 1000 DDPM steps: 7-8 s per run on 2 cores.
ToyConfig short_run(const std::string& schedule, const std::string& target) {
  nlohmann::json j = moons_config();
  for (const char* s : {"steps=3000", "batch_size=128", "hidden=64", "layers=2",
                        "input_embed_dim=16", "sample_steps=0", "n_samples=1000"})
    apply_override(j, s);
  apply_override(j, "schedule=" + schedule);
  apply_override(j, "target=" + target);
  return read_toy_config(j, "moons.json (test overrides)");
}

struct E2eCase {
  const char* schedule;
  const char* target;
  double max_ratio;  // required: swd_samples < max_ratio * swd_noise
};

void PrintTo(const E2eCase& c, std::ostream* os) { *os << c.schedule << "_" << c.target; }

class ToyEndToEnd : public ::testing::TestWithParam<E2eCase> {};

TEST_P(ToyEndToEnd, SamplesBeatTheNoiseBaseline) {
  const E2eCase c = GetParam();
  const ToyResult r = train_toy(short_run(c.schedule, c.target), false, nullptr);
  EXPECT_LT(r.final_loss, r.first_loss) << "the loss must fall";
  EXPECT_GT(r.swd_noise, 0.2) << "the baseline itself (measured 0.237)";
  EXPECT_LT(r.swd_samples, c.max_ratio * r.swd_noise)
      << "sliced W1: samples " << r.swd_samples << ", noise " << r.swd_noise << ", data floor "
      << r.swd_data;
}

// Thresholds from measured runs of this exact budget and seed (ratio samples/noise):
// epsilon 0.28 (linear) 0.26 (cosine), v 0.26 / 0.22, x0 0.52 / 0.55. x0 prediction is
// measurably worse on this budget (docs/ddpm-2d.md); each bound leaves ~20% margin.
INSTANTIATE_TEST_SUITE_P(
    TargetsAndSchedules, ToyEndToEnd,
    ::testing::Values(E2eCase{"linear", "epsilon", 0.4}, E2eCase{"linear", "x0", 0.65},
                      E2eCase{"linear", "v", 0.4}, E2eCase{"cosine", "epsilon", 0.4},
                      E2eCase{"cosine", "x0", 0.65}, E2eCase{"cosine", "v", 0.4}),
    [](const ::testing::TestParamInfo<E2eCase>& param_info) {
      return std::string(param_info.param.schedule) + "_" + param_info.param.target;
    });

TEST(ToyEndToEnd, WritesSamplesPlotAndLogs) {
  ToyConfig c = short_run("linear", "epsilon");
  c.trainer.steps = 50;
  c.log_every = 10;
  c.n_samples = 100;
  c.out_dir = ::testing::TempDir() + "/toy_outputs";
  std::filesystem::remove_all(c.out_dir);
  train_toy(c, true, nullptr);
  const std::vector<uint8_t> png = read_file(c.out_dir + "/plot.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png[1], 'P');
  const std::vector<uint8_t> csv = read_file(c.out_dir + "/samples.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 101) << "header + 100 samples";
  const std::vector<uint8_t> log = read_file(c.out_dir + "/metrics.jsonl");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 5) << "one line per 10 steps";
  const nlohmann::json summary = load_json_file(c.out_dir + "/summary.json");
  EXPECT_EQ(summary["steps"], 50);
}

// ---- the trainer's step in two halves (DiffusionTrainer::queue_step / resolve) ----

// A small MLP trainer whose model returns NaN at call `nan_call` (0-based; < 0: never).
struct NanAtCall {
  ParameterStore store;
  std::unique_ptr<MlpDenoiser> mlp;
  std::unique_ptr<DiffusionTrainer> trainer;
  int calls = 0;
  NanAtCall(bool skip) {
    mlp = std::make_unique<MlpDenoiser>(store, 2, 16, 2, 8);
    store.finalize(Device::CPU, DType::F32, 3);
    TrainerConfig c;
    c.schedule.T = 50;
    c.skip_nonfinite = skip;
    trainer = std::make_unique<DiffusionTrainer>(store, c);
  }
  Denoiser model(int nan_call) {
    return [this, nan_call](const Tensor& x, const std::vector<int>& t) {
      const Tensor y = (*mlp)(x, t);
      return calls++ == nan_call ? scale(y, std::nan("")) : y;
    };
  }
  TrainBatch batch(int64_t s) { return TrainBatch{randn(Shape{16, 2}, 5, static_cast<uint64_t>(s))}; }
  std::vector<float> weights() const { return store.flat_data().to_vector<float>(); }
};

// "stop": step 2's loss is NaN; step 3, finite on its own, was queued before step 2 was read
// back. Its gate refuses it too (the halt), so the weights are those after step 1, as when
// the steps are read at once and training stops at step 2. "skip": step 3 is applied, and
// both ways give the same bits.
TEST(Trainer, ARefusedStepHaltsTheStepQueuedBehindIt) {
  for (const bool skip : {false, true}) {
    SCOPED_TRACE(skip ? "skip" : "stop");
    NanAtCall at_once(skip), late(skip);
    const Denoiser a = at_once.model(2), b = late.model(2);
    std::vector<StepStats> sa, sb;
    for (int64_t s = 0; s < (skip ? 5 : 3); ++s) sa.push_back(at_once.trainer->step(a, at_once.batch(s)));
    late.trainer->queue_step(b, late.batch(0));
    for (int64_t s = 1; s < 5; ++s) {
      late.trainer->queue_step(b, late.batch(s));
      sb.push_back(late.trainer->resolve());
      if (!skip && s == 3) break;  // step 2 read back, step 3 queued behind it
    }
    sb.push_back(late.trainer->resolve());
    EXPECT_FALSE(sa[2].applied);
    EXPECT_FALSE(sb[2].applied);
    EXPECT_TRUE(std::isfinite(sb[3].loss)) << "step 3 is finite on its own";
    EXPECT_EQ(sb[3].applied, skip);
    if (!skip) {
      ASSERT_EQ(sb.size(), 4u);
      EXPECT_EQ(late.weights(), at_once.weights());
      EXPECT_EQ(late.trainer->optimizer().steps_taken(), 2);
    } else {
      for (size_t i = 0; i < sa.size(); ++i) {
        if (i != 2) {
          EXPECT_EQ(sb[i].loss, sa[i].loss) << i;  // (step 2's: NaN both ways)
        }
      }
      EXPECT_EQ(late.weights(), at_once.weights());
      EXPECT_EQ(late.trainer->optimizer().steps_taken(), 4);
    }
  }
}

// At most kMaxStepsInFlight steps may wait to be resolved; resolving with none is an error.
TEST(Trainer, StepsInFlightAreBounded) {
  NanAtCall t(false);
  const Denoiser m = t.model(-1);
  expect_error([&] { t.trainer->resolve(); }, {"resolve without a queued step"});
  t.trainer->queue_step(m, t.batch(0));
  t.trainer->queue_step(m, t.batch(1));
  expect_error([&] { t.trainer->queue_step(m, t.batch(2)); },
               {"2 steps are queued and unresolved", "step 2"});
}

TEST(Datasets2d, DeterministicNamedAndSpread) {
  for (const char* name : {"moons", "8gaussians", "swissroll"}) {
    const Tensor a = make_2d_dataset(name, 2000, 1, 2), b = make_2d_dataset(name, 2000, 1, 2);
    EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>()) << name;
    double sq = 0;
    for (float v : a.to_vector<float>()) sq += double(v) * v;
    const double rms = std::sqrt(sq / 4000);
    EXPECT_GT(rms, 0.5) << name;
    EXPECT_LT(rms, 2.0) << name;
  }
  expect_error([] { make_2d_dataset("spiral", 10, 0, 0); }, {"unknown 2-D dataset 'spiral'"});
}

TEST(Metrics2d, SlicedWassersteinKnownValues) {
  const Tensor a = make_2d_dataset("moons", 1000, 1, 2);
  EXPECT_EQ(sliced_wasserstein(a, a), 0.0);
  // Shifting a set by d moves every projection by d.u, so SW1 = |d| E|cos(theta)| = |d| 2/pi.
  std::vector<float> shifted = a.to_vector<float>();
  for (size_t i = 0; i < shifted.size(); i += 2) shifted[i] += 0.5f;
  const double sw = sliced_wasserstein(a, Tensor::from_vector(a.shape(), shifted), 4096);
  EXPECT_NEAR(sw, 0.5 * 2 / M_PI, 0.01);
}

TEST(ToyConfig, TheVarianceKeyIsTheSamplersAndTheLosss) {
  nlohmann::json j = moons_config();  // fixed_small
  const ToyConfig c = read_toy_config(j, "moons.json");
  EXPECT_FALSE(c.sampler.fixed_large);
  EXPECT_FALSE(c.trainer.loss.vlb_fixed_large);
  apply_override(j, "variance=fixed_large");
  EXPECT_TRUE(read_toy_config(j, "moons.json").trainer.loss.vlb_fixed_large);
}

TEST(ToyConfig, ErrorsNameTheKey) {
  nlohmann::json j = moons_config();
  apply_override(j, "stepz=10");
  expect_error([&] { read_toy_config(j, "moons.json"); }, {"moons.json", "unknown key 'stepz'"});
  j = moons_config();
  apply_override(j, "target=noise");
  expect_error([&] { read_toy_config(j, "moons.json"); },
               {"key 'target'", "epsilon, x0, v", "\"noise\""});
  j = moons_config();
  apply_override(j, "lr=fast");
  expect_error([&] { read_toy_config(j, "moons.json"); }, {"key 'lr'", "must be a number"});
  j = moons_config();
  apply_override(j, "steps=-5");
  expect_error([&] { read_toy_config(j, "moons.json"); }, {"key 'steps'", "-5"});
  j = moons_config();
  apply_override(j, "time_embed_dim=7");
  expect_error([&] { read_toy_config(j, "moons.json"); }, {"key 'time_embed_dim'", "even"});
  expect_error([&] { apply_override(j, "novalue"); }, {"--set expects key=value"});
  const std::string bad = ::testing::TempDir() + "/bad.json";
  write_file_atomic(bad, std::string("{\"model\": \"mlp2d\",,}"));
  expect_error([&] { load_json_file(bad); }, {"bad.json", "not valid JSON"});
  expect_error([&] { load_json_file("/nonexistent/config.json"); },
               {"cannot open '/nonexistent/config.json'"});
}

}  // namespace
}  // namespace ddpm
