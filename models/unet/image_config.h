// The image-training job's config: every key, its default and its range, read with errors
// that name the file and the key; and what a resumed run may change.
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
//   or cuBLAS's GEMMs, timed per shape: its own bits; each candidate checked against a
//   GPU-verified one first), cuda_autotune_unverified (false: that timing also takes the
//   paths no GPU has run yet, the flash pair on wgmma, which could trap),
//   cuda_attention, the attention in fp32 math: "auto" (default: today cuBLAS's SGEMMs at
//   every shape, P kept where the L x L matrices are at most twice qkv, L <= 6 head dim,
//   recomputed by chunks of samples past it) | "fused" | "gemm" (the same) |
//   "straightforward" (under bf16 the bf16 kernels run whatever it says),
//   profile_steps (the per-op time of that many steps: op_profile.txt; on the GPU its
//   time by CUDA events, on the CPU the wall clock).
#pragma once

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "models/config_reader.h"
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
  bool cuda_autotune_unverified = false;
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

}  // namespace ddpm
