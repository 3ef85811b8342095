// The `ddpm` command. Subcommands parse their flags, call into models/, and report.
// Errors from anywhere below arrive here as exceptions: one line on stderr, exit code 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "engine/check.h"
#include "engine/device.h"
#include "models/toy/sine_fit.h"

namespace {

void usage() {
  std::puts(
      "usage: ddpm <command> [options]\n"
      "  device                 describe the CUDA device (or why there is none)\n"
      "  demo [--steps N]       fit an MLP to sin(3x) on the CPU: the engine end to end");
}

int cmd_device() {
  if (ddpm::cuda_available()) {
    std::printf("cuda: %s\n", ddpm::cuda_device_description().c_str());
  } else {
    std::printf("cuda: unavailable (%s); the CPU path is used\n",
                ddpm::cuda_unavailable_reason().c_str());
  }
  return 0;
}

int cmd_demo(int argc, char** argv) {
  int steps = 2000;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc) {
      steps = std::stoi(argv[++i]);
      CHECK(steps > 0, "--steps must be > 0, got " << steps);
    } else {
      THROW_ERROR("demo: unknown option '" << arg << "'");
    }
  }
  const ddpm::SineFitResult r = ddpm::fit_sine(steps, /*seed=*/0, steps / 10, [](int step, double loss) {
    std::printf("step %5d  mse %.6f\n", step, loss);
  });
  std::printf("fitted sin(3x) with a %lld-parameter MLP: mse %.6f -> %.6f\n",
              static_cast<long long>(r.parameters), r.initial_loss, r.final_loss);
  return r.final_loss < 0.1 * r.initial_loss ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  try {
    const std::string cmd = argv[1];
    if (cmd == "device") return cmd_device();
    if (cmd == "demo") return cmd_demo(argc - 2, argv + 2);
    std::fprintf(stderr, "ddpm: unknown command '%s' (see ddpm --help)\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm: error: %s\n", e.what());
    return 1;
  }
}
