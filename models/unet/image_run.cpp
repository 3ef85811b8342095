#include "models/unet/image_run.h"

#include <algorithm>
#include <cmath>

#include "engine/flops.h"
#include "engine/safetensors.h"
#include "engine/weight_copy.h"
#include "models/data/cifar10.h"
#include "models/data/fashion_mnist.h"
#include "models/data/synthetic_images.h"

namespace ddpm {

namespace {

constexpr const char* kFormat = "ddpm-engine/1";
constexpr uint64_t kHeldOutSeed = 0x7E57;       // synthetic test split: run seed ^ this

}  // namespace

std::shared_ptr<const ImageDataset> open_dataset(const ImageTrainConfig& c, const std::string& split) {
  CHECK(split == "train" || split == "test", "unknown split '" << split << "' (expected train or test)");
  if (c.dataset == "synthetic")  // the test split: the same generator with another seed
    return std::make_shared<SyntheticImages>(c.synthetic_size,
                                             split == "train" ? c.trainer.seed : c.trainer.seed ^ kHeldOutSeed);
  if (c.dataset == "fashion_mnist")
    return std::make_shared<FashionMnist>(FashionMnist::load(
        c.data_dir, split, c.unet.image_size, c.unet.in_channels, c.classes));
  std::vector<int> classes(c.classes.begin(), c.classes.end());
  return std::make_shared<Cifar10>(Cifar10::load(c.data_dir, split == "train", classes));
}

ImageRun::ImageRun(const ImageTrainConfig& c, bool with_data) : config_(c) {
  CHECK(c.device == Device::CPU || cuda_available(),
        "device \"cuda\" requested but " << cuda_unavailable_reason());
  if (c.device == Device::CUDA) {
    const std::string why = conv_algorithm_unavailable(c.cuda_conv);
    CHECK(why.empty(), "cuda_conv \"wgmma\" requested but " << why);
  }
  set_conv_algorithm(c.cuda_conv);  // process-wide: the kernels the ops run
  set_precision(c.precision);
  set_activation_dtype(c.activations);
  set_conv_autotune(c.cuda_autotune);
  set_attention_autotune(c.cuda_autotune);
  set_attention_autotune_unverified(c.cuda_autotune_unverified);
  set_attention_algorithm(c.cuda_attention);
  set_cpu_kernels(c.cpu_kernels);
  unet_ = std::make_unique<UNet>(store_, c.unet);
  // Checked before anything is allocated: weights, gradients, the two AdamW moments, the EMA
  // and the copy sampling with the EMA makes, 4 bytes each per parameter.
  const double need = 6.0 * 4.0 * static_cast<double>(store_.count());
  const size_t have = device_memory_bytes(c.device);
  CHECK(have == 0 || need <= static_cast<double>(have),
        "the model has " << store_.count() << " parameters (keys 'base_channels' "
                         << c.unet.base_channels << ", 'channel_mult', 'num_res_blocks' "
                         << c.unet.num_res_blocks << "): their weights, gradients, AdamW moments "
                         << "and EMA need " << need / (1 << 30) << " GiB, the " << device_name(c.device)
                         << " has " << static_cast<double>(have) / (1 << 30) << " GiB");
  store_.finalize(c.device, DType::F32, c.trainer.seed);
  // Under bf16 on the GPU every product reads the weights in bf16: one copy, kept fresh by
  // AdamW's pass (and refreshed after any other write), instead of a conversion per call.
  if (c.device == Device::CUDA && c.precision == Precision::BF16)
    keep_bf16_copy(store_.flat_data());
  trainer_ = std::make_unique<DiffusionTrainer>(store_, c.trainer);
  if (with_data)
    batcher_ = std::make_unique<ImageBatcher>(open_dataset(c, "train"), c.batch_size, c.trainer.seed,
                                              c.random_flip);
}

Denoiser ImageRun::denoiser() const {
  const UNet* net = unet_.get();
  return [net](const Tensor& x, const Timesteps& t) {
    return net->forward(x, t, ForwardMode{});
  };
}

void ImageRun::set_world(Collective* world) {
  world_ = world;
  const int64_t ranks = world ? world->size() : 1, shard = shard_size();
  CHECK(config_.micro_batch > 0 || config_.batch_size % ranks == 0,
        "'batch_size' " << config_.batch_size << " cannot be shared by " << ranks
                        << " ranks: make it a multiple, or set 'micro_batch'");
  CHECK((config_.batch_size / shard) % ranks == 0,
        "'batch_size' " << config_.batch_size << " / 'micro_batch' " << shard << " = "
                        << config_.batch_size / shard << " shards per step cannot be shared by "
                        << ranks << " ranks (the shard count must be a multiple of it)");
  CHECK(config_.batch_size / shard <= DiffusionTrainer::kMaxShards,
        "'batch_size' / 'micro_batch' is " << config_.batch_size / shard << " shards per step, at most "
                                           << DiffusionTrainer::kMaxShards);
}

bool ImageRun::sharded() const {
  return world_ != nullptr || shard_size() < config_.batch_size;
}

int64_t ImageRun::shard_size() const {
  if (config_.micro_batch > 0) return config_.micro_batch;
  return std::max<int64_t>(1, config_.batch_size / (world_ ? world_->size() : 1));
}

StepStats ImageRun::step() {
  queue_step();
  return resolve();
}

void ImageRun::queue_step() {
  const uint64_t before = matmul_flops();
  queue_step_ops();
  if (matmul_flops() > before) step_flops_ = matmul_flops() - before;
}

void ImageRun::queue_step_ops() {
  CHECK(batcher_, "ImageRun::step without data");
  const int64_t s = trainer_->step_index();
  const UNet* net = unet_.get();
  const uint64_t seed = config_.trainer.seed;
  const Device device = config_.device;
  const bool fused = config_.trainer.fused_loss;
  if (sharded()) {
    const ShardModel model = [net, seed, s](const Shard& sh) -> Denoiser {
      const ForwardMode mode{true, seed, static_cast<uint64_t>(s), static_cast<uint64_t>(sh.index)};
      return [net, mode](const Tensor& x, const Timesteps& t) { return net->forward(x, t, mode); };
    };
    ImageBatcher& batcher = *batcher_;
    const ShardData data = [&batcher, s, device, fused](const Shard& sh) {
      if (!fused) return TrainBatch{batcher.batch(s, sh.first, sh.count).to(device)};
      ImageBatcher::Bytes b = batcher.batch_bytes(s, sh.first, sh.count);
      return TrainBatch{b.images.to(device), b.flip, b.flip_seed, b.flip_stream, b.flip_first};
    };
    SingleProcess alone;
    trainer_->queue_step_sharded(model, data, config_.batch_size, shard_size(),
                                 world_ ? *world_ : alone);
    return;
  }
  const Denoiser train_model = [net, seed, s](const Tensor& x, const Timesteps& t) {
    return net->forward(x, t, ForwardMode{true, seed, static_cast<uint64_t>(s)});
  };
  if (!fused) {
    trainer_->queue_step(train_model, TrainBatch{batcher_->batch(s).to(config_.device)});
    return;
  }
  ImageBatcher::Bytes b = batcher_->batch_bytes(s);
  trainer_->queue_step(train_model, TrainBatch{b.images.to(config_.device), b.flip, b.flip_seed,
                                               b.flip_stream, b.flip_first});
}

void ImageRun::save_checkpoint(const std::string& path) const {
  CHECK(trainer_->steps_in_flight() == 0,
        "a checkpoint with " << trainer_->steps_in_flight() << " steps unresolved");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Tensor& p : store_.parameters()) tensors.emplace_back("model." + p.name(), p);
  DiffusionTrainer& tr = *trainer_;
  if (Ema* ema = tr.ema()) {
    const Tensor flat = ema->weights();
    for (size_t i = 0; i < store_.parameters().size(); ++i) {
      const Tensor& p = store_.parameters()[i];
      tensors.emplace_back("ema." + p.name(), flat.window(store_.offset(i), p.shape()));
    }
  }
  tensors.emplace_back("optim.m", tr.optimizer().first_moment());
  tensors.emplace_back("optim.v", tr.optimizer().second_moment());
  write_safetensors(path, tensors,
                    {{"format", kFormat},
                     {"step", std::to_string(tr.step_index())},
                     {"optimizer_steps", std::to_string(tr.optimizer().steps_taken())},
                     {"config", config_.json.dump()},
                     {"timestep_sampler", tr.timestep_sampler().state().dump()}});
}

void ImageRun::load_checkpoint(const std::string& path) {
  const SafetensorsFile f = read_safetensors(path);
  auto meta = [&](const char* key) {
    auto it = f.metadata.find(key);
    CHECK(it != f.metadata.end(), "checkpoint '" << path << "' lacks metadata '" << key << "'");
    return it->second;
  };
  CHECK(meta("format") == kFormat, "checkpoint '" << path << "' has format '" << meta("format")
                                                  << "', expected '" << kFormat << "'");
  auto tensor = [&](const std::string& name, const Shape& shape) -> const Tensor& {
    auto it = f.tensors.find(name);
    CHECK(it != f.tensors.end(), "checkpoint '" << path << "' lacks tensor '" << name
                                                << "' (a different model config?)");
    CHECK(it->second.shape() == shape, "checkpoint '" << path << "': tensor '" << name << "' is "
                                                      << it->second.shape().str() << ", the model's is "
                                                      << shape.str());
    const float* v = it->second.data<float>();
    for (int64_t i = 0; i < shape.numel(); ++i)
      CHECK(std::isfinite(v[i]), "checkpoint '" << path << "': tensor '" << name << "' element "
                                                << i << " is " << number_text(v[i]));
    return it->second;
  };
  for (const Tensor& p : store_.parameters()) p.copy_from(tensor("model." + p.name(), p.shape()));
  DiffusionTrainer& tr = *trainer_;
  if (Ema* ema = tr.ema()) {
    const Tensor flat = ema->weights();
    for (size_t i = 0; i < store_.parameters().size(); ++i) {
      const Tensor& p = store_.parameters()[i];
      flat.window(store_.offset(i), p.shape()).copy_from(tensor("ema." + p.name(), p.shape()));
    }
  }
  const Shape flat_shape = store_.flat_data().shape();
  tr.optimizer().first_moment().copy_from(tensor("optim.m", flat_shape));
  tr.optimizer().second_moment().copy_from(tensor("optim.v", flat_shape));
  const int64_t step = parse_integer(meta("step"), "checkpoint '" + path + "': metadata 'step'");
  CHECK(step >= 0, "checkpoint '" << path << "': metadata 'step' is " << step);
  // Older checkpoints have no optimizer_steps: no step was skipped then.
  const auto opt = f.metadata.find("optimizer_steps");
  const int64_t optimizer_steps =
      opt == f.metadata.end()
          ? step
          : parse_integer(opt->second, "checkpoint '" + path + "': metadata 'optimizer_steps'");
  CHECK(optimizer_steps >= 0 && optimizer_steps <= step,
        "checkpoint '" << path << "': metadata 'optimizer_steps' " << optimizer_steps
                       << " is not in [0, step " << step << "]");
  const nlohmann::json sampler = nlohmann::json::parse(meta("timestep_sampler"), nullptr, false);
  CHECK(!sampler.is_discarded(),
        "checkpoint '" << path << "': metadata 'timestep_sampler' is not valid JSON");
  tr.timestep_sampler().load_state(sampler, "checkpoint '" + path + "': timestep sampler state");
  tr.set_step_index(step);
  tr.optimizer().set_steps_taken(optimizer_steps);
}

template <class F>
auto ImageRun::with_weights(bool use_ema, F f) {
  Ema* ema = trainer_->ema();
  Tensor saved;
  if (use_ema && ema) {
    saved = store_.flat_data().clone();
    load_flat(store_, ema->weights());
  }
  auto result = f();
  if (saved.defined()) load_flat(store_, saved);
  return result;
}

SampleResult ImageRun::sample(int64_t n, uint64_t seed, const SamplerConfig& sc, bool use_ema,
                              const Tensor& start) {
  const int64_t s = config_.unet.image_size;
  return with_weights(use_ema, [&] {
    return ddpm::sample(trainer_->schedule(), denoiser(), sc,
                        Shape{n, s, s, config_.unet.in_channels}, seed, config_.device, start);
  });
}

Tensor ImageRun::progressive(int64_t n, uint64_t seed, SamplerConfig sc, bool use_ema,
                             std::vector<int>* timesteps) {
  const int K = sc.steps == 0 ? config_.trainer.schedule.T : sc.steps;
  sc.record.clear();
  for (int k = 0; k < 10; ++k) sc.record.push_back(K - 1 - k * (K - 1) / 9);
  const SampleResult r = sample(n, seed, sc, use_ema);
  if (timesteps)
    for (const auto& step_x0 : r.progress) timesteps->push_back(step_x0.first);
  const int64_t s = config_.unet.image_size, ch = config_.unet.in_channels, px = s * s * ch;
  std::vector<float> rows;  // row i: sample i's predicted x0 at the recorded steps
  for (int64_t i = 0; i < n; ++i)
    for (const auto& step_x0 : r.progress) {
      const std::vector<float> v = step_x0.second.to(Device::CPU).to_vector<float>();
      rows.insert(rows.end(), v.begin() + i * px, v.begin() + (i + 1) * px);
    }
  return Tensor::from_vector(Shape{n * 10, s, s, ch}, rows);
}

LikelihoodConfig ImageRun::likelihood_config() const {
  LikelihoodConfig lc;
  lc.target = config_.trainer.target;
  lc.fixed_large = config_.sampler.fixed_large;
  lc.clip_x0 = config_.sampler.clip_x0;
  return lc;
}

LikelihoodResult ImageRun::likelihood(const ImageDataset& data, int64_t n,
                                      const LikelihoodConfig& lc, bool use_ema,
                                      const LikelihoodProgress& progress) {
  CHECK(n >= 1 && n <= data.size(), "likelihood: " << n << " images asked of a split of " << data.size());
  CHECK(data.height() == config_.unet.image_size && data.channels() == config_.unet.in_channels,
        "likelihood: the split's images are " << data.height() << "x" << data.width() << "x"
                                              << data.channels() << ", the model's "
                                              << config_.unet.image_size << "x"
                                              << config_.unet.image_size << "x"
                                              << config_.unet.in_channels);
  const Device device = config_.device;
  return with_weights(use_ema, [&] {
    return evaluate_likelihood(
        trainer_->schedule(), denoiser(), lc, n,
        [&](int64_t first, int64_t count) { return dataset_images(data, first, count).to(device); },
        progress);
  });
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const SafetensorsFile f = read_safetensors(path);
  CheckpointInfo info;
  auto it = f.metadata.find("config");
  CHECK(it != f.metadata.end(), "checkpoint '" << path << "' has no config in its metadata");
  info.config = nlohmann::json::parse(it->second, nullptr, false);
  CHECK(!info.config.is_discarded() && info.config.is_object(),
        "checkpoint '" << path << "': its config is not a valid JSON object");
  auto st = f.metadata.find("step");
  CHECK(st != f.metadata.end(), "checkpoint '" << path << "' has no step in its metadata");
  info.step = parse_integer(st->second, "checkpoint '" + path + "': metadata 'step'");
  info.tensors = static_cast<int64_t>(f.tensors.size());
  return info;
}

CheckpointInfo validate_checkpoint(const std::string& path) {
  const CheckpointInfo info = read_checkpoint_info(path);
  ImageTrainConfig c = read_image_train_config(info.config, path + " (stored config)");
  c.device = Device::CPU;
  ImageRun run(c, /*with_data=*/false);
  run.load_checkpoint(path);
  return info;
}

}  // namespace ddpm
