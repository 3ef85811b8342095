// `ddpm report`: a run folder's training report as one self-contained HTML page.
#include <cstdio>

#include "apps/commands.h"
#include "engine/check.h"
#include "models/run_report.h"

namespace ddpm::app {
namespace {

int run(int argc, char** argv) {
  CHECK(argc >= 1 && argv[0][0] != '-', "give the run folder: ddpm report RUN_DIR [--out FILE]");
  const std::string dir = argv[0];
  const Args args(argc - 1, argv + 1, {"out"}, {});
  const std::string path = write_run_report(dir, args.get("out", ""));
  std::printf("wrote %s\n", path.c_str());
  return 0;
}

}  // namespace

const Command kReport = {
    "report",
    "usage: ddpm report RUN_DIR [--out FILE.html]\n"
    "\n"
    "Writes the run's training report (default RUN_DIR/report.html; `ddpm train` writes it at\n"
    "the end of every run): the command and device, the final samples and the progressive-\n"
    "generation strip, loss (raw and smoothed, and per tenth of the timesteps), gradient norm,\n"
    "learning rate, throughput and bits/dim over training, the sample grids over time and the\n"
    "config. One file: plots as inline SVG, images inline; it opens offline.",
    run};

}  // namespace ddpm::app
