// The `ddpm` command: dispatch to a subcommand (apps/cmd_*.cpp), help, version, and the one
// place errors become what a person reads: a single line naming the file, key or option,
// the value and what is allowed. The source location and C++ expression of the failed check
// are for developers (DDPM_ERROR_SOURCE=1 prints them).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "engine/check.h"
#include "engine/distributed/world.h"

#ifndef DDPM_VERSION
#define DDPM_VERSION "unknown"
#endif

namespace ddpm::app {
namespace {

const Command* const kCommands[] = {&kTrain, &kSample, &kEval,     &kExport, &kReport,
                                    &kInfo,  &kConfig, &kSchedule, &kDevice, &kDemo};

void usage(FILE* out) {
  std::fputs(
      "usage: ddpm <command> [options]      (ddpm <command> --help for its options)\n"
      "  train     train the model a config describes (configs/*.json)\n"
      "  sample    draw samples from a checkpoint: a PNG grid, or N exported for FID\n"
      "  eval      a checkpoint's bits/dim on a data split (the variational bound)\n"
      "  export    a data split as the FID tools read it (npz or PNGs)\n"
      "  report    a run folder's training report as one HTML page\n"
      "  info      a config's or checkpoint's settings, parameter count and step\n"
      "  config    every key of a config: value, default, what is allowed\n"
      "  schedule  a noise schedule's tables, one row per t\n"
      "  device    the CUDA device, or why there is none\n"
      "  demo      fit an MLP to sin(3x) in a second\n"
      "  help      this text, or a command's: ddpm help train\n"
      "ddpm --version prints the version.\n",
      out);
}

const Command* find(const std::string& name) {
  for (const Command* c : kCommands)
    if (name == c->name) return c;
  return nullptr;
}

bool wants_help(int argc, char** argv) {
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
  return false;
}

// Prints the error; in an MPI job of several ranks, then ends all of them (no rank is left
// waiting for this one in a collective).
int report(const std::string& message) {
  std::fprintf(stderr, "ddpm: error: %s\n", message.c_str());
  std::fflush(stderr);
  ddpm::abort_world(1);
  return 1;
}

}  // namespace
}  // namespace ddpm::app

int main(int argc, char** argv) {
  using namespace ddpm::app;
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    const Command* c = argc > 2 ? find(argv[2]) : nullptr;
    if (argc > 2 && c == nullptr) {
      std::fprintf(stderr, "ddpm: unknown command '%s' (see ddpm --help)\n", argv[2]);
      return 2;
    }
    if (c != nullptr) std::printf("%s\n", c->help);
    else usage(stdout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    std::printf("ddpm %s\n", DDPM_VERSION);
    return 0;
  }
  const Command* c = find(cmd);
  if (c == nullptr) {
    std::fprintf(stderr, "ddpm: unknown command '%s' (see ddpm --help)\n", cmd.c_str());
    return 2;
  }
  if (wants_help(argc - 2, argv + 2)) {
    std::printf("%s\n", c->help);
    return 0;
  }
  try {
    return c->run(argc - 2, argv + 2);
  } catch (const ddpm::Error& e) {
    const char* source = std::getenv("DDPM_ERROR_SOURCE");
    return report(source != nullptr && *source == '1' ? e.what() : e.message());
  } catch (const std::bad_alloc&) {
    return report("out of memory: the model, the batch or the samples do not fit; lower "
                  "'batch_size', 'base_channels' or --n");
  } catch (const nlohmann::json::exception& e) {
    return report(std::string("a JSON value has the wrong type: ") + e.what());
  } catch (const std::exception& e) {
    return report(std::string("internal error: ") + e.what());
  }
}
