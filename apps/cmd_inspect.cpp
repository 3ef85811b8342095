// The commands that look rather than train: info, config, schedule, device, demo.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "apps/commands.h"
#include "engine/device.h"
#include "models/config_reader.h"
#include "models/ddpm/schedule.h"
#include "models/toy/mlp_denoiser.h"
#include "models/toy/sine_fit.h"
#include "models/toy/toy_train.h"
#include "models/unet/image_train.h"

namespace ddpm::app {
namespace {

// The config read as a run would read it: every key resolved, with its parameter count.
struct ReadConfig {
  std::vector<ConfigKey> keys;
  int64_t parameters = 0;
};

ReadConfig read_any_config(const nlohmann::json& config, const std::string& source) {
  CHECK(config.is_object() && config.contains("model") && config["model"].is_string(),
        source << ": the config has no \"model\" key (unet or mlp2d)");
  ReadConfig r;
  ParameterStore store;
  if (config["model"] == "unet") {
    const ImageTrainConfig c = read_image_train_config(config, source);
    UNet net(store, c.unet);
    r.keys = c.keys;
  } else {
    const ToyConfig c = read_toy_config(config, source);
    MlpDenoiser net(store, 2, c.hidden, c.layers, c.time_embed_dim, c.input_embed_dim);
    r.keys = c.keys;
  }
  r.parameters = store.count();
  return r;
}

nlohmann::json config_from(const Args& args, std::string* source) {
  *source = args.require("config");
  nlohmann::json config = load_json_file(*source);
  for (const std::string& s : args.all("set")) apply_override(config, s);
  return config;
}

int info(int argc, char** argv) {
  const Args args(argc, argv, {"ckpt", "config"}, {});
  CHECK(args.has("ckpt") != args.has("config"), "info needs exactly one of --ckpt or --config");
  nlohmann::json config;
  std::string source;
  int64_t step = -1;
  if (args.has("ckpt")) {
    source = args.get("ckpt", "");
    const CheckpointInfo info = validate_checkpoint(source);  // every tensor, not only the header
    config = info.config;
    step = info.step;
  } else {
    source = args.get("config", "");
    config = load_json_file(source);
  }
  std::printf("%s\nconfig: %s\n", source.c_str(), config.dump(2).c_str());
  std::printf("parameters: %lld\n", static_cast<long long>(read_any_config(config, source).parameters));
  if (step >= 0) std::printf("step: %lld\n", static_cast<long long>(step));
  return 0;
}

int config(int argc, char** argv) {
  const Args args(argc, argv, {"config"}, {}, {"set"});
  std::string source;
  const ReadConfig r = read_any_config(config_from(args, &source), source);
  size_t width = 4;
  for (const ConfigKey& k : r.keys) width = std::max(width, k.name.size());
  std::printf("%s (%lld parameters): %zu keys\n", source.c_str(),
              static_cast<long long>(r.parameters), r.keys.size());
  std::printf("%-*s  %-22s  %-22s  %s\n", static_cast<int>(width), "key", "value", "default",
              "allowed");
  for (const ConfigKey& k : r.keys)
    std::printf("%-*s  %-22s  %-22s  %s%s\n", static_cast<int>(width), k.name.c_str(),
                k.value.dump().c_str(), k.fallback.dump().c_str(), k.allowed.c_str(),
                k.value == k.fallback ? "" : "  (set)");
  return 0;
}

int schedule(int argc, char** argv) {
  const Args args(argc, argv, {"schedule", "T", "format"}, {});
  ScheduleConfig c;
  c.kind = parse_schedule_kind(args.get("schedule", "linear"));
  c.T = static_cast<int>(args.integer("T", 1000, 2, 100000));
  const std::string format = args.get("format", "csv");
  CHECK(format == "csv" || format == "json",
        "option '--format' must be csv or json, got '" << format << "'");
  std::cout << schedule_table(make_schedule(c), format == "json");
  return 0;
}

int device(int argc, char** argv) {
  const Args args(argc, argv, {}, {});
  if (cuda_available()) {
    std::printf("cuda: %s\n", cuda_device_description().c_str());
  } else {
    std::printf("cuda: unavailable (%s); the CPU path is used\n", cuda_unavailable_reason().c_str());
  }
  return 0;
}

int demo(int argc, char** argv) {
  const Args args(argc, argv, {"steps"}, {});
  const int steps = static_cast<int>(args.integer("steps", 2000, 10, 10'000'000));
  const SineFitResult r = fit_sine(steps, /*seed=*/0, steps / 10, [](int step, double loss) {
    std::printf("step %5d  mse %.6f\n", step, loss);
  });
  std::printf("fitted sin(3x) with a %lld-parameter MLP: mse %.6f -> %.6f\n",
              static_cast<long long>(r.parameters), r.initial_loss, r.final_loss);
  return 0;
}

}  // namespace

const Command kInfo = {
    "info",
    "usage: ddpm info (--ckpt FILE | --config FILE)\n"
    "\n"
    "Prints a run's config, its parameter count and (for a checkpoint) its step. A checkpoint\n"
    "is read whole: every tensor is checked against the model its config describes.",
    info};

const Command kConfig = {
    "config",
    "usage: ddpm config --config FILE [--set key=value ...]\n"
    "\n"
    "Prints every key a run of this config reads: its value, its default and what is allowed\n"
    "(\"(set)\" marks values that differ from the default). Errors are the ones `ddpm train`\n"
    "would give, before anything runs.",
    config};

const Command kSchedule = {
    "schedule",
    "usage: ddpm schedule [--schedule linear|cosine] [--T N] [--format csv|json]\n"
    "\n"
    "Prints a noise schedule's tables, one row per t: beta, alpha_bar, the posterior\n"
    "variance, SNR, log-SNR and the VLB weight.",
    schedule};

const Command kDevice = {"device",
                         "usage: ddpm device\n\nDescribes the CUDA device, or why there is none.",
                         device};

const Command kDemo = {
    "demo",
    "usage: ddpm demo [--steps N]\n\nFits an MLP to sin(3x): the engine end to end, in a second.",
    demo};

}  // namespace ddpm::app
