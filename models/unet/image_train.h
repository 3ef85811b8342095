// Training the U-Net on images (train_images): the loop that queues and resolves steps, and
// the folder it writes; the config is models/unet/image_config.h, the run and its checkpoints
// models/unet/image_run.h.
//
// Outputs under out_dir (models/run_folder.h has the folder's rules: one trainer at a time,
// no new run over an old one, nothing lost on resume): config.json (the resolved config),
// metrics.jsonl (one JSON line per logged step, appended: loss, its mean per tenth of the
// timesteps (loss_by_t), grad_norm, lr, img/s, matmul_tflops (the step's matrix-product FLOPs,
// engine/flops.h, at that rate), and bits_per_dim when evaluated), samples/step_N.png and
// samples/final.png (EMA weights when EMA is on), samples/progressive.png (8 samples' predicted
// x0 at 10 steps), run.json (command, device, start), report.html (models/run_report.h, at
// the end), ckpt/step_N.safetensors (the last
// keep_checkpoints of them).
#pragma once

#include <atomic>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/device.h"
#include "models/unet/image_config.h"
#include "models/unet/image_run.h"

namespace ddpm {

struct TrainProgress {
  int64_t step = 0, total = 0;
  StepStats stats;
  double images_per_second = 0;         // over the steps since the last report
  double matmul_tflops = 0;             // ImageRun::step_flops() at that rate: MFU's numerator
  DeviceWorkCounts step_work;           // GPU work of this step: launches, memsets, syncs
  double eta_seconds = 0;
  double quality = -1, roughness = -1;  // synthetic data only; < 0: not measured this step
  double bits_per_dim = -1, bpd_standard_error = 0;  // < 0: not evaluated this step
};

// The whole job: train (from scratch or `resume` a checkpoint), log, checkpoint, sample.
// `report` is called every log_every steps and at the end. On synthetic data the quality
// figures of the samples are measured before training (when not resuming) and whenever
// samples are written.
struct TrainSummary {
  double first_loss = 0, final_loss = 0;
  double untrained_quality = -1, final_quality = -1;      // valid fraction
  double untrained_roughness = -1, final_roughness = -1;  // mean roughness (data ~2)
  double final_bits_per_dim = -1, final_bpd_standard_error = 0;  // when evaluated at the end
  std::string samples_path, log_path, last_checkpoint, report_path;
  std::vector<std::string> notes;  // what the run did to the folder or the config, to print
  int64_t steps_trained = 0, skipped_steps = 0;
  bool interrupted = false;  // stopped by *stop: the checkpoint holds the last step
};

struct TrainOptions {
  std::string resume;              // a checkpoint, "latest" (newest in out_dir), or none
  bool overwrite = false;          // start over in an out_dir that holds a run
  std::set<std::string> named;     // keys --set gave: recipe changes allowed on resume
  const std::atomic<bool>* stop = nullptr;  // when set: finish the step, checkpoint, return
  std::string command;             // the command line, recorded in out_dir/run.json
  // Data-parallel: rank 0 writes the folder (logs, samples, checkpoints, report) and the
  // others only train; all read the same config and resume the checkpoint rank 0 names.
  Collective* world = nullptr;
};

// Errors before any training: a checkpoint whose step is already `steps` (nothing to do),
// an out_dir in use or holding another run, a resume that changes the model. A non-finite
// step stops the run with an error naming it (its update is not applied), unless
// "nonfinite": "skip".
TrainSummary train_images(const ImageTrainConfig& config, const TrainOptions& options,
                          const std::function<void(const TrainProgress&)>& report);

}  // namespace ddpm
