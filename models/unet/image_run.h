// One run's model, parameters, trainer state and data (ImageRun): its steps, its samples,
// its likelihood, and its checkpoints, which resume exactly.
//
// A checkpoint (safetensors) holds "model.<name>" and "ema.<name>" for every parameter,
// "optim.m" and "optim.v" (the flat AdamW moments), and metadata: format, step, the config
// (JSON), the timestep sampler's state, the optimiser's step count (AdamW's bias correction;
// it lags the step when non-finite steps were skipped). Every random draw of step s is a pure function of
// (seed, s), so the step number is the whole RNG position: N steps, save, resume, N more
// steps gives bitwise the weights of 2N steps straight.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/data/image_dataset.h"
#include "models/ddpm/likelihood.h"
#include "models/ddpm/trainer.h"
#include "models/unet/image_config.h"
#include "models/unet/unet.h"

namespace ddpm {

// The config's dataset, split "train" or "test" (synthetic: a held-out set drawn with
// another seed).
std::shared_ptr<const ImageDataset> open_dataset(const ImageTrainConfig& c, const std::string& split);

// The model, its parameters, the trainer state and the data of one run.
class ImageRun {
 public:
  explicit ImageRun(const ImageTrainConfig& config, bool with_data = true);
  // Data-parallel training: this rank's share of each step, gradients summed over `world`
  // (engine/collective.h). Checks that the step's shards divide among its ranks.
  void set_world(Collective* world);
  // Samples per shard: micro_batch, or batch_size / ranks.
  int64_t shard_size() const;
  // Whether steps are taken in shards (micro_batch below batch_size, or several ranks).
  bool sharded() const;
  // One training step, or its two halves (DiffusionTrainer::queue_step and resolve): queue
  // step s + 1 before resolving step s and the host never waits for the GPU inside a step.
  StepStats step();
  void queue_step();
  // The matrix-product FLOPs of the last step queued eagerly (engine/flops.h; 0 before the
  // first). A replayed CUDA graph runs no op to count; it repeats that step's work.
  uint64_t step_flops() const { return step_flops_; }
  StepStats resolve() { return trainer_->resolve(); }
  int64_t steps_in_flight() const { return trainer_->steps_in_flight(); }
  int64_t step_index() const { return trainer_->step_index(); }  // the next step to queue

  void save_checkpoint(const std::string& path) const;  // with no step in flight
  void load_checkpoint(const std::string& path);  // resumes: weights, EMA, moments, step, sampler

  // Samples with the current weights, or the EMA weights (restored afterwards).
  SampleResult sample(int64_t n, uint64_t seed, const SamplerConfig& sc, bool use_ema,
                      const Tensor& start = {});
  Denoiser denoiser() const;
  // n samples' predicted x0 at 10 steps from noise to the end, (n * 10, H, W, C), sample i's
  // row at 10 i .. 10 i + 9: the progressive-generation strip.
  // timesteps: the 10 recorded t, first (noisiest) to last.
  Tensor progressive(int64_t n, uint64_t seed, SamplerConfig sc, bool use_ema,
                     std::vector<int>* timesteps = nullptr);
  // The bound in bits/dim on the first n images of `data` (models/ddpm/likelihood.h), with
  // the current or the EMA weights. likelihood_config(): the run's target, variance and
  // clipping; the caller sets timesteps, batch and seed.
  LikelihoodConfig likelihood_config() const;
  LikelihoodResult likelihood(const ImageDataset& data, int64_t n, const LikelihoodConfig& lc,
                              bool use_ema, const LikelihoodProgress& progress = {});
  ParameterStore& store() { return store_; }
  const ImageTrainConfig& config() const { return config_; }
  DiffusionTrainer& trainer() { return *trainer_; }

 private:
  // f() with the EMA weights loaded (when use_ema and the run has EMA), restored after.
  template <class F>
  auto with_weights(bool use_ema, F f);
  void queue_step_ops();  // queue_step's work

  ImageTrainConfig config_;
  ParameterStore store_;
  std::unique_ptr<UNet> unet_;
  std::unique_ptr<DiffusionTrainer> trainer_;
  std::unique_ptr<ImageBatcher> batcher_;
  Collective* world_ = nullptr;  // none: one process
  uint64_t step_flops_ = 0;
};

// The config stored in a checkpoint, and the checkpoint's step (for `ddpm info`/`sample`).
// Errors name the file and what is wrong (no config, a config that is not valid JSON, a step
// that is not a whole number).
struct CheckpointInfo {
  nlohmann::json config;
  int64_t step = 0;
  int64_t tensors = 0;
};
CheckpointInfo read_checkpoint_info(const std::string& path);
// read_checkpoint_info, then every tensor checked against the model its config describes
// (`ddpm info --ckpt`): a checkpoint that passes loads.
CheckpointInfo validate_checkpoint(const std::string& path);

}  // namespace ddpm
