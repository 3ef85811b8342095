// The folder a training run writes to (out_dir), and the rules that keep a run from hurting
// another one or itself:
//   - the path may not be empty or the root directory;
//   - one trainer at a time: an exclusive lock (flock on out_dir/.lock) held for the run's
//     life; a second trainer fails at once, naming the holder's pid;
//   - files a killed write left behind (*.tmp.*) are removed when the lock is taken;
//   - a new run does not start in a folder that holds a run, unless told to overwrite it;
//     resuming from step k sets aside what came after k on another timeline (checkpoints to
//     ckpt/abandoned/, metrics lines to metrics.abandoned.jsonl): nothing is deleted;
//   - checkpoint retention keeps the newest steps of this timeline, by step number;
//   - metrics.jsonl is appended to, a line per logged step, never rewritten.
//
//   out_dir/.lock  config.json  run.json  metrics.jsonl  report.html  samples/*.png
//   ckpt/step_NNNNNNNN.safetensors
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpm {

class RunFolder {
 public:
  // Validates the path (errors name `key`), creates the folder, takes the lock, cleans up.
  explicit RunFolder(const std::string& out_dir, const std::string& key = "out_dir");
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& path() const { return dir_; }
  std::string metrics_path() const { return dir_ + "/metrics.jsonl"; }
  std::string samples_dir() const { return dir_ + "/samples"; }
  std::string checkpoint_path(int64_t step) const;

  // (step, path) of ckpt/step_*.safetensors, oldest first.
  std::vector<std::pair<int64_t, std::string>> checkpoints() const;
  // What of an earlier run is here (checkpoints, metrics): empty when nothing.
  std::string describe_run() const;
  // Removes an earlier run's checkpoints, metrics, samples, config, run.json and report
  // (--overwrite).
  void clear_run();
  // Resuming at `step`: later checkpoints and metrics lines are moved aside; returns what.
  std::vector<std::string> set_aside_after(int64_t step);
  // Deletes all but the `keep` newest checkpoints.
  void keep_newest(int64_t keep);
  void append_metrics(const nlohmann::json& line);
  void write_config(const nlohmann::json& config);

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

// The newest checkpoint in out_dir/ckpt that reads as a checkpoint (`--resume latest`);
// errors name the folder when there is none.
std::string latest_checkpoint(const std::string& out_dir);

}  // namespace ddpm
