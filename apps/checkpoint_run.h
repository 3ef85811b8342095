// What `ddpm sample`, `ddpm eval` and `ddpm export` share: a run rebuilt from a checkpoint
// (its stored config, --device to move it), and a progress line for long loops.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "apps/args.h"
#include "models/unet/image_train.h"

namespace ddpm::app {

struct CheckpointRun {
  CheckpointInfo info;
  std::unique_ptr<ImageRun> run;  // the weights loaded, no training data opened
};
// --ckpt FILE, and --device cpu|cuda when given (else the stored config's device).
CheckpointRun open_checkpoint_run(const Args& args);

// "\r<what> 1234/50000 [#####.....]  41.2/s  eta 0:19:31" on a terminal, a line every 10%
// otherwise (logs stay short).
class Progress {
 public:
  Progress(std::string what, int64_t total);
  void update(int64_t done);

 private:
  std::string what_;
  int64_t total_, last_decile_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ddpm::app
