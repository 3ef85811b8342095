// Training the U-Net on images, with checkpoints that resume exactly.
//
// Config (configs/tiny.json, configs/cifar10_ddpm.json): "model": "unet", the U-Net keys
// (models/unet/unet.h), the recipe keys (models/ddpm/trainer.h), the sampling keys, and
//   dataset "synthetic" | "cifar10" | "fashion_mnist", data_dir, classes, synthetic_size,
//   random_flip, batch_size, micro_batch (samples per shard of a step: the unit of
//   gradient accumulation and of data parallelism; 0: batch_size / ranks), n_samples,
//   log_every, sample_every, ckpt_every,
//   keep_checkpoints, out_dir, device "cpu" | "cuda" | "auto" (the GPU when there is one),
//   cpu_kernels "fast" | "reference", cuda_conv "tiled" (fp32, default) | "tensor_core" (TF32) |
//   "bf16_tensor_core" (v4: bf16 operands, fp32 accumulation) | "naive" | "cudnn" (the
//   library baseline, in the precision's math) | "auto" (per layer and pass the faster of
//   ours and cuDNN's in the precision's math, timed on first use and printed),
//   precision "fp32" (default) | "tf32" | "bf16" (convolution and linear operands rounded to
//   TF32 / bf16, fp32 sums; on CUDA the convolutions then run on v4 (in TF32: TF32
//   mma.sync or the operands' bf16 pieces, by pass) whatever cuda_conv says, but for cudnn,
//   auto, wgmma (v5) and, in TF32, tensor_core (v3); docs/precision.md),
//   cuda_autotune (v4's block shapes, or under cuda_conv "wgmma" v5's schedules, timed per
//   layer on first use; same results; and on bf16 activations the attention's path, flash
//   or cuBLAS's GEMMs, timed per shape: its own bits),
//   cuda_attention, the attention in fp32 math: "auto" (default: today cuBLAS's SGEMMs at
//   every shape, P kept where the L x L matrices are at most twice qkv, L <= 6 head dim,
//   recomputed by chunks of samples past it) | "fused" | "gemm" (the same) |
//   "straightforward" (under bf16 the bf16 kernels run whatever it says),
//   profile_steps (the per-op GPU time of that many steps: op_profile.txt; CUDA only).
// Outputs under out_dir (models/run_folder.h has the folder's rules: one trainer at a time,
// no new run over an old one, nothing lost on resume): config.json (the resolved config),
// metrics.jsonl (one JSON line per logged step, appended: loss, its mean per tenth of the
// timesteps (loss_by_t), grad_norm, lr, img/s, matmul_tflops (the step's matrix-product FLOPs,
// engine/flops.h, at that rate), and bits_per_dim when evaluated), samples/step_N.png and
// samples/final.png (EMA weights when EMA is on), samples/progressive.png (8 samples' predicted
// x0 at 10 steps), run.json (command, device, start), report.html (models/run_report.h, at
// the end), ckpt/step_N.safetensors (the last
// keep_checkpoints of them).
//
// A checkpoint (safetensors) holds "model.<name>" and "ema.<name>" for every parameter,
// "optim.m" and "optim.v" (the flat AdamW moments), and metadata: format, step, the config
// (JSON), the timestep sampler's state, the optimiser's step count (AdamW's bias correction;
// it lags the step when non-finite steps were skipped). Every random draw of step s is a pure function of
// (seed, s), so the step number is the whole RNG position: N steps, save, resume, N more
// steps gives bitwise the weights of 2N steps straight.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "models/data/image_dataset.h"
#include "models/ddpm/likelihood.h"
#include "models/ddpm/trainer.h"
#include "models/unet/unet.h"

namespace ddpm {

struct ImageTrainConfig {
  UNetConfig unet;
  TrainerConfig trainer;
  SamplerConfig sampler;
  std::string dataset = "synthetic", data_dir;
  std::vector<int64_t> classes;
  int64_t synthetic_size = 50000;
  bool random_flip = true;
  int64_t batch_size = 128, micro_batch = 0, n_samples = 16, log_every = 10, sample_every = 0, ckpt_every = 0;
  int64_t keep_checkpoints = 3;
  // bits/dim on the test split every eval_every steps and at the end (0: never), on its
  // first eval_images images with eval_timesteps stratified terms each (0: all T)
  int64_t eval_every = 0, eval_images = 256, eval_timesteps = 20;
  // the GPU time of every op over this many steps from the third step the process runs (the
  // first two warm the allocator and the autotuner): engine/op_profile.h, written to
  // op_profile.txt in out_dir and printed (0: off; CUDA only)
  int64_t profile_steps = 0;
  std::string out_dir = "runs/unet";
  Device device = Device::CPU;
  ConvAlgorithm cuda_conv = ConvAlgorithm::Tiled;
  Precision precision = Precision::F32;
  DType activations = DType::F32;  // bf16 storage of activations (needs precision bf16)
  bool cuda_autotune = false;
  AttentionAlgorithm cuda_attention = AttentionAlgorithm::Auto;
  CpuKernels cpu_kernels = cpu_fast_kernels_built() ? CpuKernels::Fast : CpuKernels::Reference;
  nlohmann::json json;  // the config as read (with overrides), stored in checkpoints
  std::vector<ConfigKey> keys;  // every key with its resolved value, default and range
};

// Errors name the context (file) and key; unknown keys are errors.
ImageTrainConfig read_image_train_config(const nlohmann::json& json, const std::string& context);

// cuda_conv's values, as the config and `ddpm sample --cuda-conv` spell them.
const std::vector<std::string>& cuda_conv_values();

// A checkpoint's stored config with how its products run set anew, which the weights it holds
// do not depend on (`ddpm sample --precision --cuda-conv`): "precision" and "cuda_conv", each
// where given (non-empty; read_image_train_config checks the values). A stored
// "activations": "bf16" goes with bf16 products only, so other products drop it (bf16
// products then store bf16 activations unless the config named fp32).
nlohmann::json with_products(nlohmann::json config, const std::string& precision,
                             const std::string& cuda_conv);

// The model, its parameters, the trainer state and the data of one run.
// The config's dataset, split "train" or "test" (synthetic: a held-out set drawn with
// another seed).
std::shared_ptr<const ImageDataset> open_dataset(const ImageTrainConfig& c, const std::string& split);

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

// A key whose value differs between a checkpoint's config and a resumed run's.
struct ConfigChange {
  std::string key;
  nlohmann::json from, to;
};
// Resuming a checkpoint with a config `now`: architecture changes are errors; recipe
// changes (lr, target, schedule, seed, batch_size, data, ...) are errors unless `named`
// (the keys --set gave) holds them; run-length, logging, device and sampling keys may
// change. Returns every change, for the run to print.
std::vector<ConfigChange> compare_for_resume(const ImageTrainConfig& stored,
                                             const ImageTrainConfig& now,
                                             const std::set<std::string>& named,
                                             const std::string& checkpoint);

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
