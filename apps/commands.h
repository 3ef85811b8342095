// The `ddpm` subcommands: each parses its flags (apps/args.h), calls into models/, and prints
// what it did. One file per group: cmd_train.cpp, cmd_sample.cpp, cmd_eval.cpp (eval,
// export), cmd_report.cpp, cmd_inspect.cpp.
#pragma once

#include "apps/args.h"

namespace ddpm::app {

struct Command {
  const char* name;
  const char* help;  // the text `ddpm <name> --help` prints
  int (*run)(int argc, char** argv);
};

extern const Command kTrain, kSample, kEval, kExport, kReport, kInfo, kConfig, kSchedule, kDevice,
    kDemo;

}  // namespace ddpm::app
