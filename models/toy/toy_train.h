// DDPM on 2-D data, end to end: the MLP denoiser trained with the shared DDPM step on a
// built-in dataset, then sampled and scored. Configured by a JSON file (configs/moons.json):
//   model "mlp2d", dataset, train_points, hidden, layers, time_embed_dim, input_embed_dim,
//   batch_size,
//   n_samples, log_every, out_dir, plus the recipe keys of models/ddpm/trainer.h and the
//   sampling keys (sampler, sample_steps, eta, variance, clip_x0).
// Writes into out_dir: samples.csv, plot.png (samples over held-out data), metrics.jsonl
// (one line per logged step) and summary.json.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "models/ddpm/trainer.h"

namespace ddpm {

struct ToyConfig {
  std::string dataset = "moons";
  int64_t train_points = 10000;
  int64_t hidden = 128, layers = 3, time_embed_dim = 32, input_embed_dim = 0;
  int64_t batch_size = 256;
  int64_t n_samples = 2000;
  int64_t log_every = 100;
  std::string out_dir = "runs/moons";
  TrainerConfig trainer;
  SamplerConfig sampler;
  CpuKernels cpu_kernels = cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference;
  std::vector<ConfigKey> keys;  // every key with its resolved value, default and range
};

// Errors name the file and key (unknown keys included).
ToyConfig read_toy_config(const nlohmann::json& json, const std::string& context);

struct ToyResult {
  double first_loss = 0, final_loss = 0;  // mean of the first / last 10% of steps
  double swd_samples = 0;                 // sliced W1: samples vs held-out data
  double swd_noise = 0;                   // the same for N(0, I) noise: the baseline
  double swd_data = 0;                    // two independent data sets: the floor
  int64_t parameters = 0;
  double seconds = 0;
};

// `log(line)` receives progress lines. write_outputs = false skips the files (tests).
ToyResult train_toy(const ToyConfig& config, bool write_outputs,
                    const std::function<void(const std::string&)>& log);

}  // namespace ddpm
