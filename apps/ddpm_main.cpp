// The `ddpm` command. Subcommands parse their flags, call into models/, and report.
// Errors from anywhere below arrive here as exceptions: one line on stderr, exit code 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <algorithm>
#include <cmath>

#include "apps/args.h"
#include "engine/device.h"
#include "models/config_reader.h"
#include "models/ddpm/schedule.h"
#include "models/toy/sine_fit.h"
#include "models/toy/mlp_denoiser.h"
#include "models/toy/toy_train.h"
#include "models/unet/image_train.h"

#include <unistd.h>

namespace ddpm::app {
namespace {

void usage() {
  std::puts(
      "usage: ddpm <command> [options]\n"
      "  train --config FILE [--set key=value ...] [--resume CKPT]\n"
      "                         train the model a config describes (configs/*.json)\n"
      "  sample --ckpt FILE --out FILE.png [--n N] [--sampler ddpm|ddim] [--steps K]\n"
      "         [--eta E] [--ema|--no-ema] [--seed S] [--device cpu|cuda] [--progressive]\n"
      "         [--interpolate]\n"
      "                         draw samples from a checkpoint as a PNG grid\n"
      "  info (--ckpt FILE | --config FILE)\n"
      "                         the config, parameter count and step of a run\n"
      "  schedule [--schedule linear|cosine] [--T N] [--format csv|json]\n"
      "                         print a noise schedule's tables, one row per t\n"
      "  device                 describe the CUDA device (or why there is none)\n"
      "  demo [--steps N]       fit an MLP to sin(3x): the engine end to end, in a second");
}

int cmd_device() {
  if (cuda_available()) {
    std::printf("cuda: %s\n", cuda_device_description().c_str());
  } else {
    std::printf("cuda: unavailable (%s); the CPU path is used\n",
                cuda_unavailable_reason().c_str());
  }
  return 0;
}

int cmd_demo(const Args& args) {
  const int steps = static_cast<int>(args.integer("steps", 2000, 10, 10'000'000));
  const SineFitResult r = fit_sine(steps, /*seed=*/0, steps / 10, [](int step, double loss) {
    std::printf("step %5d  mse %.6f\n", step, loss);
  });
  std::printf("fitted sin(3x) with a %lld-parameter MLP: mse %.6f -> %.6f\n",
              static_cast<long long>(r.parameters), r.initial_loss, r.final_loss);
  return 0;
}

int cmd_schedule(const Args& args) {
  ScheduleConfig c;
  c.kind = parse_schedule_kind(args.get("schedule", "linear"));
  c.T = static_cast<int>(args.integer("T", 1000, 2, 100000));
  const std::string format = args.get("format", "csv");
  CHECK(format == "csv" || format == "json",
        "option '--format' must be csv or json, got '" << format << "'");
  std::cout << schedule_table(make_schedule(c), format == "json");
  return 0;
}

std::string format_seconds(double s) {
  char buf[32];
  const long long t = static_cast<long long>(s);
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

int train_unet(const nlohmann::json& config, const std::string& path, const Args& args) {
  const ImageTrainConfig c = read_image_train_config(config, path);
  {
    ParameterStore probe;
    UNet net(probe, c.unet);
    std::printf("training the U-Net (%lld parameters) on %s data, %s: %lld steps of batch %lld\n",
                static_cast<long long>(probe.count()), c.dataset.c_str(),
                device_name(c.device), static_cast<long long>(c.trainer.steps),
                static_cast<long long>(c.batch_size));
  }
  const bool tty = isatty(fileno(stdout));
  const TrainSummary s = train_images(c, args.get("resume", ""), [&](const TrainProgress& p) {
    char quality[64] = "";
    if (p.quality >= 0)
      std::snprintf(quality, sizeof quality, "  valid %.0f%%  roughness %.1f", 100 * p.quality,
                    p.roughness);
    std::printf("%sstep %lld/%lld  loss %.4f  grad %.3f  lr %.2e  %.1f img/s  eta %s%s%s",
                tty ? "\r" : "", static_cast<long long>(p.step), static_cast<long long>(p.total),
                p.stats.loss, p.stats.grad_norm, p.stats.lr, p.images_per_second,
                format_seconds(p.eta_seconds).c_str(), quality, tty ? "   " : "\n");
    std::fflush(stdout);
  });
  if (tty) std::printf("\n");
  std::printf("loss %.4f -> %.4f", s.first_loss, s.final_loss);
  if (s.untrained_quality >= 0)
    std::printf("\nsample quality, untrained -> trained: valid %.0f%% -> %.0f%%, roughness %.1f -> "
                "%.1f (the data: 100%% valid, roughness ~2)",
                100 * s.untrained_quality, 100 * s.final_quality, s.untrained_roughness,
                s.final_roughness);
  if (c.device == Device::CUDA)
    std::printf("\npeak device memory: %.1f MiB", static_cast<double>(cuda_peak_bytes_in_use()) / (1 << 20));
  std::printf("\nsamples: %s\nlog: %s\ncheckpoint: %s\n", s.samples_path.c_str(),
              s.log_path.c_str(), s.last_checkpoint.c_str());
  return 0;
}

int cmd_train(const Args& args) {
  const std::string path = args.require("config");
  nlohmann::json config = load_json_file(path);
  for (const std::string& s : args.all("set")) apply_override(config, s);
  CHECK(config.is_object() && config.contains("model") && config["model"].is_string(),
        path << ": needs a \"model\" key (unet or mlp2d)");
  if (config["model"] == "unet") return train_unet(config, path, args);
  CHECK(!args.has("resume"), "--resume is for U-Net runs");
  const ToyConfig toy = read_toy_config(config, path);
  std::printf("training %s on %s: %lld steps, target %s, %s schedule, %s loss\n",
              "mlp2d", toy.dataset.c_str(), static_cast<long long>(toy.trainer.steps),
              target_name(toy.trainer.target), schedule_kind_name(toy.trainer.schedule.kind),
              loss_kind_name(toy.trainer.loss.kind));
  const ToyResult r = train_toy(toy, true, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  std::printf(
      "done in %.1f s (%lld parameters): loss %.4f -> %.4f; sliced W1 to held-out data: "
      "samples %.4f, Gaussian noise %.4f, a second data set %.4f\n",
      r.seconds, static_cast<long long>(r.parameters), r.first_loss, r.final_loss,
      r.swd_samples, r.swd_noise, r.swd_data);
  std::printf("wrote %s/{samples.csv, plot.png, metrics.jsonl, summary.json}\n",
              toy.out_dir.c_str());
  return 0;
}

int cmd_info(const Args& args) {
  CHECK(args.has("ckpt") != args.has("config"), "info needs exactly one of --ckpt or --config");
  nlohmann::json config;
  std::string source;
  int64_t step = -1;
  if (args.has("ckpt")) {
    source = args.get("ckpt", "");
    const CheckpointInfo info = read_checkpoint_info(source);
    config = info.config;
    step = info.step;
  } else {
    source = args.get("config", "");
    config = load_json_file(source);
  }
  std::printf("%s\nconfig: %s\n", source.c_str(), config.dump(2).c_str());
  CHECK(config.is_object() && config.contains("model"), source << ": the config has no \"model\"");
  int64_t count = 0;
  if (config["model"] == "unet") {
    const ImageTrainConfig c = read_image_train_config(config, source);
    ParameterStore store;
    UNet net(store, c.unet);
    count = store.count();
  } else {
    const ToyConfig c = read_toy_config(config, source);
    ParameterStore store;
    MlpDenoiser net(store, 2, c.hidden, c.layers, c.time_embed_dim, c.input_embed_dim);
    count = store.count();
  }
  std::printf("parameters: %lld\n", static_cast<long long>(count));
  if (step >= 0) std::printf("step: %lld\n", static_cast<long long>(step));
  return 0;
}

int cmd_sample(const Args& args) {
  const std::string ckpt = args.require("ckpt"), out = args.require("out");
  CHECK(!(args.has("ema") && args.has("no-ema")), "give --ema or --no-ema, not both");
  const CheckpointInfo info = read_checkpoint_info(ckpt);
  ImageTrainConfig c = read_image_train_config(info.config, ckpt + " (stored config)");
  if (args.has("device")) {
    const std::string d = args.get("device", "");
    CHECK(d == "cpu" || d == "cuda", "option '--device' must be cpu or cuda, got '" << d << "'");
    c.device = d == "cuda" ? Device::CUDA : Device::CPU;
  }
  ImageRun run(c, /*with_data=*/false);
  run.load_checkpoint(ckpt);
  SamplerConfig sc = c.sampler;
  if (args.has("sampler")) sc.kind = parse_sampler_kind(args.get("sampler", ""));
  sc.steps = static_cast<int>(args.integer("steps", sc.steps, 0, c.trainer.schedule.T));
  sc.eta = args.number("eta", sc.eta);
  const int64_t n = args.integer("n", 64, 1, 100000);
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  const bool ema = !args.has("no-ema");
  if (args.has("progressive")) {
    const int K = sc.steps == 0 ? c.trainer.schedule.T : sc.steps;
    for (int k = 0; k < 10; ++k) sc.record.push_back(K - 1 - k * (K - 1) / 9);
    const SampleResult r = run.sample(n, seed, sc, ema);
    std::vector<Tensor> strips;  // row i: sample i's predicted x0 at the recorded steps
    std::vector<float> grid;
    const int64_t s = c.unet.image_size, px = s * s * 3;
    for (int64_t i = 0; i < n; ++i)
      for (const auto& [t, x0] : r.progress) {
        const std::vector<float> v = x0.to(Device::CPU).to_vector<float>();
        grid.insert(grid.end(), v.begin() + i * px, v.begin() + (i + 1) * px);
      }
    write_image_grid(out, Tensor::from_vector(Shape{n * 10, s, s, 3}, grid), 10);
    std::printf("wrote %s: %lld rows of predicted x0 at 10 steps, t = %d .. %d\n", out.c_str(),
                static_cast<long long>(n), r.progress.front().first, r.progress.back().first);
  } else if (args.has("interpolate")) {
    // Spherical interpolation between two noises, decoded with deterministic DDIM.
    sc.kind = SamplerKind::Ddim;
    sc.eta = 0;
    const int64_t s = c.unet.image_size;
    const Tensor start = slerp(randn(Shape{1, s, s, 3}, seed, 1), randn(Shape{1, s, s, 3}, seed, 2), n)
                             .to(c.device);
    write_image_grid(out, run.sample(n, seed, sc, ema, start).x0, n);
    std::printf("wrote %s: %lld images along a slerp between two noises\n", out.c_str(),
                static_cast<long long>(n));
  } else {
    write_image_grid(out, run.sample(n, seed, sc, ema).x0, 8);
    std::printf("wrote %s: %lld samples (%s weights, step %lld)\n", out.c_str(),
                static_cast<long long>(n), ema ? "EMA" : "raw", static_cast<long long>(info.step));
  }
  return 0;
}

}  // namespace
}  // namespace ddpm::app

int main(int argc, char** argv) {
  using namespace ddpm::app;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  try {
    const std::string cmd = argv[1];
    const int n = argc - 2;
    char** rest = argv + 2;
    if (cmd == "device") return cmd_device();
    if (cmd == "demo") return cmd_demo(Args(n, rest, {"steps"}, {}));
    if (cmd == "schedule") return cmd_schedule(Args(n, rest, {"schedule", "T", "format"}, {}));
    if (cmd == "train") return cmd_train(Args(n, rest, {"config", "resume"}, {}, {"set"}));
    if (cmd == "info") return cmd_info(Args(n, rest, {"ckpt", "config"}, {}));
    if (cmd == "sample")
      return cmd_sample(Args(n, rest, {"ckpt", "out", "n", "sampler", "steps", "eta", "seed", "device"},
                             {"ema", "no-ema", "progressive", "interpolate"}));
    std::fprintf(stderr, "ddpm: unknown command '%s' (see ddpm --help)\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm: error: %s\n", e.what());
    return 1;
  }
}
