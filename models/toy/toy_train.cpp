#include "models/toy/toy_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "engine/file_io.h"
#include "engine/philox.h"
#include "models/run_folder.h"
#include "models/toy/datasets2d.h"
#include "models/toy/metrics2d.h"
#include "models/toy/mlp_denoiser.h"
#include "models/toy/scatter_plot.h"

namespace ddpm {

namespace {
// Philox streams of the run's data (distinct from the trainer's streams).
constexpr uint64_t kTrainDataStream = 0xD000, kHeldOutStream = 0xD100, kNoiseBaseline = 0xD200,
                   kDataFloorStream = 0xD400,
                   kBatchStream = 0xD300000000000000ull;
}  // namespace

ToyConfig read_toy_config(const nlohmann::json& json, const std::string& context) {
  ConfigReader r(json, context);
  ToyConfig c;
  r.choice("model", "mlp2d", {"mlp2d"});
  c.dataset = r.choice("dataset", c.dataset, {"moons", "8gaussians", "swissroll"});
  c.train_points = r.integer("train_points", c.train_points, 1, 100'000'000);
  c.hidden = r.integer("hidden", c.hidden, 1, 65536);
  c.layers = r.integer("layers", c.layers, 1, 64);
  c.time_embed_dim = r.integer("time_embed_dim", c.time_embed_dim, 4, 4096);
  r.require(c.time_embed_dim % 2 == 0, "time_embed_dim",
            "must be even, got " + std::to_string(c.time_embed_dim));
  c.input_embed_dim = r.integer("input_embed_dim", c.input_embed_dim, 0, 4096);
  r.require(c.input_embed_dim == 0 || (c.input_embed_dim >= 4 && c.input_embed_dim % 2 == 0),
            "input_embed_dim", "must be 0 or even and >= 4, got " + std::to_string(c.input_embed_dim));
  c.batch_size = r.integer("batch_size", c.batch_size, 1, 1'000'000);
  c.n_samples = r.integer("n_samples", c.n_samples, 2, 10'000'000);
  c.log_every = r.integer("log_every", c.log_every, 1, 1'000'000'000);
  c.out_dir = r.string("out_dir", c.out_dir);
  TrainerConfig d;
  d.adam.lr = 1e-3;
  d.steps = 3000;
  d.grad_clip = 1.0;
  c.trainer = read_trainer_config(r, d);
  SamplerConfig s;
  s.clip_x0 = true;  // 2-D data lies within about [-2.5, 2.5]: clip the predicted x0 there
  s.clip_range = 3.0;
  c.sampler = read_sampler_config(r, s, c.trainer.schedule.T);
  c.sampler.target = c.trainer.target;
  c.trainer.loss.vlb_fixed_large = c.sampler.fixed_large;  // the model's variance: one key
  c.cpu_kernels = read_cpu_kernels(r);
  r.finish();
  c.keys = r.keys();
  return c;
}

ToyResult train_toy(const ToyConfig& c, bool write_outputs,
                    const std::function<void(const std::string&)>& log) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t seed = c.trainer.seed;
  set_cpu_kernels(c.cpu_kernels);
  ParameterStore store;
  const MlpDenoiser model(store, 2, c.hidden, c.layers, c.time_embed_dim, c.input_embed_dim);
  store.finalize(Device::CPU, DType::F32, seed);
  DiffusionTrainer trainer(store, c.trainer);
  const Denoiser denoise = [&](const Tensor& x, const std::vector<int>& t) { return model(x, t); };

  const Tensor data = make_2d_dataset(c.dataset, c.train_points, seed, kTrainDataStream);
  const float* dp = data.data<float>();
  std::string metrics;
  std::vector<double> losses;
  ToyResult result;
  result.parameters = store.count();
  for (int64_t step = 0; step < c.trainer.steps; ++step) {
    std::vector<float> batch(static_cast<size_t>(2 * c.batch_size));
    for (int64_t i = 0; i < c.batch_size; ++i) {
      const int64_t k = std::min<int64_t>(
          c.train_points - 1,
          static_cast<int64_t>(philox_uniform(seed, kBatchStream + step, i) * c.train_points));
      batch[2 * i] = dp[2 * k];
      batch[2 * i + 1] = dp[2 * k + 1];
    }
    const StepStats st = trainer.step(denoise, Tensor::from_vector(Shape{c.batch_size, 2}, batch));
    losses.push_back(st.loss);
    if ((step + 1) % c.log_every == 0 || step + 1 == c.trainer.steps) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "{\"step\": %lld, \"loss\": %.6g, \"grad_norm\": %.6g, \"lr\": %.6g}",
                    static_cast<long long>(step + 1), st.loss, st.grad_norm, st.lr);
      metrics += std::string(line) + "\n";
      if (log) log(line);
    }
  }
  const size_t tenth = std::max<size_t>(1, losses.size() / 10);
  for (size_t i = 0; i < tenth; ++i) {
    result.first_loss += losses[i] / tenth;
    result.final_loss += losses[losses.size() - 1 - i] / tenth;
  }

  if (Ema* ema = trainer.ema()) load_flat(store, ema->weights());  // sample with EMA weights
  const SampleResult samples =
      sample(trainer.schedule(), denoise, c.sampler, Shape{c.n_samples, 2}, seed + 1, Device::CPU);
  const Tensor held_out = make_2d_dataset(c.dataset, c.n_samples, seed, kHeldOutStream);
  result.swd_samples = sliced_wasserstein(samples.x0, held_out);
  result.swd_noise = sliced_wasserstein(randn(Shape{c.n_samples, 2}, seed, kNoiseBaseline), held_out);
  result.swd_data = sliced_wasserstein(
      make_2d_dataset(c.dataset, c.n_samples, seed, kDataFloorStream), held_out);
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (write_outputs) {
    const RunFolder folder(c.out_dir);  // a valid path, one writer at a time
    std::ostringstream csv;
    csv << "x,y\n";
    const std::vector<float> s = samples.x0.to_vector<float>();
    for (size_t i = 0; i + 1 < s.size(); i += 2) csv << s[i] << "," << s[i + 1] << "\n";
    write_file_atomic(c.out_dir + "/samples.csv", csv.str());
    write_scatter_png(c.out_dir + "/plot.png", held_out, samples.x0);
    write_file_atomic(c.out_dir + "/metrics.jsonl", metrics);
    const nlohmann::json summary = {
        {"dataset", c.dataset},           {"target", target_name(c.trainer.target)},
        {"schedule", schedule_kind_name(c.trainer.schedule.kind)},
        {"steps", c.trainer.steps},       {"parameters", result.parameters},
        {"first_loss", result.first_loss}, {"final_loss", result.final_loss},
        {"swd_samples", result.swd_samples}, {"swd_noise", result.swd_noise},
        {"swd_data", result.swd_data},
        {"seconds", result.seconds}};
    write_file_atomic(c.out_dir + "/summary.json", summary.dump(2) + "\n");
  }
  return result;
}

}  // namespace ddpm
