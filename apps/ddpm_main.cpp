// The `ddpm` command. Subcommands parse their flags, call into models/, and report.
// Errors from anywhere below arrive here as exceptions: one line on stderr, exit code 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "apps/args.h"
#include "engine/device.h"
#include "models/config_reader.h"
#include "models/ddpm/schedule.h"
#include "models/toy/sine_fit.h"
#include "models/toy/toy_train.h"

namespace ddpm::app {
namespace {

void usage() {
  std::puts(
      "usage: ddpm <command> [options]\n"
      "  train --config FILE [--set key=value ...]\n"
      "                         train the model a config describes (configs/*.json)\n"
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

int cmd_train(const Args& args) {
  const std::string path = args.require("config");
  nlohmann::json config = load_json_file(path);
  for (const std::string& s : args.all("set")) apply_override(config, s);
  CHECK(config.is_object() && config.contains("model"),
        path << ": needs a \"model\" key (mlp2d)");
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
    if (cmd == "train") return cmd_train(Args(n, rest, {"config"}, {}, {"set"}));
    std::fprintf(stderr, "ddpm: unknown command '%s' (see ddpm --help)\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm: error: %s\n", e.what());
    return 1;
  }
}
