#include "models/unet/image_train.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "engine/file_io.h"
#include "engine/flops.h"
#include "engine/op_profile.h"
#include "engine/safetensors.h"
#include "engine/weight_copy.h"
#include "models/data/cifar10.h"
#include "models/data/fashion_mnist.h"
#include "models/data/synthetic_images.h"
#include "models/run_folder.h"
#include "models/run_report.h"

namespace ddpm {

namespace {

constexpr const char* kFormat = "ddpm-engine/1";
constexpr uint64_t kSampleSeedOffset = 0x5A4D;  // sampling seed = run seed + this
constexpr uint64_t kHeldOutSeed = 0x7E57;       // synthetic test split: run seed ^ this


// What the run computes on: the GPU's description, or the CPU's model, threads and kernels.
std::string describe_device(const ImageTrainConfig& c) {
  if (c.device == Device::CUDA) return cuda_device_description();
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      model = line.substr(line.find(':') + 2);
      break;
    }
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;  // built without OpenMP (the CUDA emulation's builds)
#endif
  return "CPU: " + model + ", " + std::to_string(threads) + " threads, " +
         (c.cpu_kernels == CpuKernels::Fast ? "fast" : "reference") + " kernels";
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string finite_or_name(double v) {
  return std::isnan(v) ? "NaN" : std::isinf(v) ? (v > 0 ? "+Inf" : "-Inf") : std::to_string(v);
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

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

const std::vector<std::string>& cuda_conv_values() {
  static const std::vector<std::string> values = {
      "tiled", "tensor_core", "bf16_tensor_core", "bf16x6", "wgmma", "naive", "cudnn", "auto"};
  return values;
}

nlohmann::json with_products(nlohmann::json config, const std::string& precision,
                             const std::string& cuda_conv) {
  if (!precision.empty()) {
    config["precision"] = precision;
    if (precision != "bf16" && config.contains("activations") && config["activations"] == "bf16")
      config.erase("activations");
  }
  if (!cuda_conv.empty()) config["cuda_conv"] = cuda_conv;
  return config;
}

ImageTrainConfig read_image_train_config(const nlohmann::json& json, const std::string& context) {
  ConfigReader r(json, context);
  ImageTrainConfig c;
  c.json = json;
  r.choice("model", "unet", {"unet"});
  c.unet = read_unet_config(r, c.unet);
  TrainerConfig d;
  d.steps = 1000;
  d.ema_decay = 0.9999;
  c.trainer = read_trainer_config(r, d);
  c.sampler = read_sampler_config(r, SamplerConfig{}, c.trainer.schedule.T);
  c.sampler.target = c.trainer.target;
  c.sampler.cuda_graph = c.trainer.cuda_graph;  // one key for both loops
  c.trainer.loss.vlb_fixed_large = c.sampler.fixed_large;  // the model's variance: one key
  c.dataset = r.choice("dataset", c.dataset, {"synthetic", "cifar10", "fashion_mnist"});
  c.data_dir = r.string("data_dir", c.dataset == "fashion_mnist" ? FashionMnist::kDefaultDir : "");
  c.classes = r.integers("classes", c.classes, 0, 9);
  c.synthetic_size = r.integer("synthetic_size", c.synthetic_size, 1, 1'000'000'000);
  c.random_flip = r.boolean("random_flip", c.random_flip);
  c.batch_size = r.integer("batch_size", c.batch_size, 1, 1'000'000);
  c.micro_batch = r.integer("micro_batch", c.micro_batch, 0, c.batch_size);
  CHECK(c.micro_batch == 0 || c.batch_size % c.micro_batch == 0,
        context << ": 'micro_batch' " << c.micro_batch << " does not divide 'batch_size' "
                << c.batch_size);
  c.n_samples = r.integer("n_samples", c.n_samples, 1, 100'000);
  c.log_every = r.integer("log_every", c.log_every, 1, 1'000'000'000);
  c.sample_every = r.integer("sample_every", c.sample_every, 0, 1'000'000'000);
  c.ckpt_every = r.integer("ckpt_every", c.ckpt_every, 0, 1'000'000'000);
  c.keep_checkpoints = r.integer("keep_checkpoints", c.keep_checkpoints, 1, 1'000'000);
  c.eval_every = r.integer("eval_every", c.eval_every, 0, 1'000'000'000);
  c.eval_images = r.integer("eval_images", c.eval_images, 1, 1'000'000);
  c.eval_timesteps = r.integer("eval_timesteps", c.eval_timesteps, 0, c.trainer.schedule.T - 1);
  c.profile_steps = r.integer("profile_steps", c.profile_steps, 0, 1'000'000);
  c.out_dir = r.string("out_dir", c.out_dir);
  // "auto": the GPU when this machine has one (the main job's choice), else the CPU
  const std::string device = r.choice("device", "cpu", {"cpu", "cuda", "auto"});
  c.device = device == "cuda" || (device == "auto" && cuda_available()) ? Device::CUDA : Device::CPU;
  const std::string conv = r.choice("cuda_conv", "tiled", cuda_conv_values());
  c.cuda_conv = conv == "naive"              ? ConvAlgorithm::Naive
                : conv == "tensor_core"      ? ConvAlgorithm::TensorCore
                : conv == "bf16_tensor_core" ? ConvAlgorithm::Bf16TensorCore
                : conv == "bf16x6"           ? ConvAlgorithm::Bf16x6
                : conv == "wgmma"            ? ConvAlgorithm::Wgmma
                : conv == "cudnn"            ? ConvAlgorithm::Cudnn
                : conv == "auto"             ? ConvAlgorithm::Auto
                                             : ConvAlgorithm::Tiled;
  c.cuda_autotune = r.boolean("cuda_autotune", c.cuda_autotune);
  const std::string precision = r.choice("precision", "fp32", {"fp32", "tf32", "bf16"});
  c.precision = precision == "bf16"   ? Precision::BF16
                : precision == "tf32" ? Precision::TF32
                                      : Precision::F32;
  // bf16 products store bf16 activations unless the config says otherwise (docs/precision.md):
  // issue 14's recipe, on an H200 1.26x the step on fp32 activations in 59% of its memory.
  // The same default on the CPU, so a config means the same numbers on either device.
  const char* activations = c.precision == Precision::BF16 ? "bf16" : "fp32";
  c.activations = r.choice("activations", activations, {"fp32", "bf16"}) == "bf16" ? DType::BF16
                                                                                : DType::F32;
  const std::string attention =
      r.choice("cuda_attention", "auto", {"auto", "fused", "gemm", "straightforward"});
  c.cuda_attention = attention == "fused"            ? AttentionAlgorithm::Fused
                     : attention == "gemm"           ? AttentionAlgorithm::Gemm
                     : attention == "straightforward" ? AttentionAlgorithm::Straightforward
                                                      : AttentionAlgorithm::Auto;
  c.cpu_kernels = read_cpu_kernels(r);
  r.finish();
  c.keys = r.keys();
  // keys of one kind of data set given for the other would be silently ignored
  const bool files = c.dataset != "synthetic";
  r.require(files || !r.has("classes"), "classes",
            "filters cifar10's and fashion_mnist's labels; the synthetic dataset has none");
  r.require(files || !r.has("data_dir"), "data_dir",
            "names the files of cifar10 or fashion_mnist; the synthetic dataset is generated");
  r.require(!files || !r.has("synthetic_size"), "synthetic_size",
            "sizes the synthetic dataset; " + c.dataset + " has the size of its files");
  CHECK(c.dataset != "cifar10" || !c.data_dir.empty(),
        context << ": key 'data_dir' is required with \"dataset\": \"cifar10\"");
  if (c.dataset == "fashion_mnist") {
    CHECK(c.unet.image_size == 28 || c.unet.image_size == 32,
          context << ": key 'image_size' must be 28 or 32 (padded) for fashion_mnist, got "
                  << c.unet.image_size);
    CHECK(c.unet.in_channels == 1 || c.unet.in_channels == 3,
          context << ": key 'in_channels' must be 1 (grey) or 3 for fashion_mnist, got "
                  << c.unet.in_channels);
  } else {
    CHECK(c.unet.image_size == 32, context << ": key 'image_size' must be 32 for the "
                                           << c.dataset << " dataset, got " << c.unet.image_size);
    CHECK(c.unet.in_channels == 3, context << ": key 'in_channels' must be 3 for the "
                                           << c.dataset << " dataset, got " << c.unet.in_channels);
  }
  CHECK(c.activations != DType::BF16 || c.precision == Precision::BF16,
        context << ": key 'activations' is \"bf16\" but 'precision' is \"" << precision
                << "\": bf16 activations are the operands of bf16 products; set \"precision\": "
                   "\"bf16\"");
  CHECK(!c.out_dir.empty(), context << ": key 'out_dir' is empty: name the folder the run writes to");
  CHECK(!(c.trainer.cuda_graph && c.profile_steps > 0 && c.device == Device::CUDA),
        context << ": keys 'cuda_graph' and 'profile_steps' together: the op profile times "
                   "ops one by one, which a captured step does not launch; profile without "
                   "cuda_graph");
  return c;
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
                                                << i << " is " << finite_or_name(v[i]));
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

namespace {

// Keys that describe the network: a checkpoint only loads into the same one.
const std::set<std::string> kArchitectureKeys = {
    "model", "image_size", "in_channels", "base_channels", "channel_mult",
    "num_res_blocks", "attention_resolutions", "attention_heads", "groups"};
// Keys a resumed run may change freely: how long, where, how often, on what device and
// kernels, how it samples; none changes the weights a step computes (beyond the order of its
// sums).
const std::set<std::string> kFreeKeys = {
    "steps", "out_dir", "log_every", "sample_every", "ckpt_every", "keep_checkpoints",
    "n_samples", "device", "cuda_conv", "cuda_autotune", "cuda_attention", "cpu_kernels",
    "upsample_by_phase", "data_dir", "sampler",
    "sample_steps", "eta", "variance", "clip_x0", "clip_range", "nonfinite", "eval_every",
    "eval_images", "eval_timesteps", "profile_steps"};

}  // namespace

std::vector<ConfigChange> compare_for_resume(const ImageTrainConfig& stored,
                                             const ImageTrainConfig& now,
                                             const std::set<std::string>& named,
                                             const std::string& checkpoint) {
  std::map<std::string, nlohmann::json> before;
  for (const ConfigKey& k : stored.keys) before[k.name] = k.value;
  std::vector<ConfigChange> changes;
  std::string architecture, recipe;
  for (const ConfigKey& k : now.keys) {
    auto it = before.find(k.name);
    if (it == before.end() || it->second == k.value) continue;
    changes.push_back({k.name, it->second, k.value});
    const std::string change = k.name + " " + json_text(it->second) + " -> " + json_text(k.value);
    if (kArchitectureKeys.count(k.name)) {
      architecture += (architecture.empty() ? "" : ", ") + change;
    } else if (!kFreeKeys.count(k.name) && !named.count(k.name)) {
      recipe += (recipe.empty() ? "" : ", ") + change;
    }
  }
  CHECK(architecture.empty(), "cannot resume '" << checkpoint << "': the model differs from its ("
                                                << architecture << ")");
  CHECK(recipe.empty(), "resuming '" << checkpoint << "' would change the recipe (" << recipe
                                     << "); name each key with --set to change it on purpose");
  return changes;
}

namespace {

// The run's starting point: a fresh folder, or a checkpoint resumed (its config compared
// with this one's, later checkpoints set aside).
std::string start_run(ImageRun& run, RunFolder& folder, const TrainOptions& o, TrainSummary& summary) {
  const ImageTrainConfig& c = run.config();
  if (o.resume.empty()) {
    const std::string earlier = folder.describe_run();
    CHECK(earlier.empty() || o.overwrite,
          "'" << folder.path() << "' already holds a run (" << earlier
              << "): resume it with --resume latest, start over with --overwrite, or set "
                 "another out_dir");
    if (!earlier.empty()) {
      folder.clear_run();
      summary.notes.push_back("overwrote the earlier run in " + folder.path() + " (" + earlier + ")");
    }
    return "";
  }
  const std::string path = o.resume == "latest" ? latest_checkpoint(folder.path()) : o.resume;
  const CheckpointInfo info = read_checkpoint_info(path);
  const ImageTrainConfig stored =
      read_image_train_config(info.config, "checkpoint '" + path + "' (its config)");
  for (const ConfigChange& ch : compare_for_resume(stored, c, o.named, path))
    summary.notes.push_back("config change on resume: " + ch.key + " " + json_text(ch.from) +
                            " -> " + json_text(ch.to));
  CHECK(info.step < c.trainer.steps,
        "checkpoint '" << path << "' is at step " << info.step << " and the config's 'steps' is "
                       << c.trainer.steps << ": nothing to train (raise it, e.g. --set steps="
                       << 2 * std::max<int64_t>(info.step, 1) << ")");
  run.load_checkpoint(path);
  for (const std::string& m : folder.set_aside_after(run.step_index()))
    summary.notes.push_back("set aside (after the resumed step): " + m);
  summary.notes.push_back("resumed " + path + " at step " + std::to_string(run.step_index()));
  return path;
}

// Every rank must train the same recipe: the ranks' resolved configs compared key by key,
// each difference named ("rank 1 has seed 1, rank 0 has 0"), the same error on every rank.
void check_ranks_share_config(Collective& world, const nlohmann::json& resolved) {
  const std::vector<std::string> all = world.all_gather_text(resolved.dump());
  const nlohmann::json first = nlohmann::json::parse(all[0]);  // rank 0's, seen by every rank
  std::string differences;
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    for (const auto& [key, value] : first.items()) {
      const nlohmann::json theirs = other.contains(key) ? other[key] : nlohmann::json();
      if (theirs != value)
        differences += (differences.empty() ? "" : ", ") + ("rank " + std::to_string(r) + " has " +
                       key + " " + json_text(theirs) + ", rank 0 has " + json_text(value));
    }
  }
  CHECK(differences.empty(), "the " << world.size() << " ranks disagree on the resolved config ("
                                    << differences
                                    << "): every rank must be started with the same config");
}

// A signal reaches mpirun's ranks at different steps: they stop together, at the first
// step after which any rank has been asked to.
bool any_rank_asks_to_stop(const TrainOptions& o, Collective* world) {
  const double mine = o.stop != nullptr && o.stop->load() ? 1.0 : 0.0;
  if (world == nullptr || world->size() == 1) return mine > 0;
  for (double v : world->all_gather({mine}))
    if (v > 0) return true;
  return false;
}

// Ranks other than 0: the same steps (and the same non-finite stop), no files.
TrainSummary train_steps_only(ImageRun& run, const TrainOptions& o, Collective& world) {
  TrainSummary summary;
  const int64_t first = run.step_index(), total = run.config().trainer.steps;
  while (run.step_index() < total) {
    const StepStats st = run.step();
    const bool stop = any_rank_asks_to_stop(o, &world);
    if (!st.applied) {
      ++summary.skipped_steps;
      CHECK(run.config().trainer.skip_nonfinite,
            "rank " << world.rank() << ", step " << run.step_index()
                    << ": a non-finite loss or gradient norm (rank 0 says more)");
    }
    if (stop && run.step_index() < total) {
      summary.interrupted = true;
      break;
    }
  }
  summary.steps_trained = run.step_index() - first;
  return summary;
}

// profile_steps: the op profile (engine/op_profile.h) of the steps queued in
// [from, from + count), taken once they are all queued (one wait for the GPU, between steps).
class OpProfileWindow {
 public:
  OpProfileWindow(int64_t from, int64_t count) : from_(from), count_(count) {}
  // Before step `step` is queued; returns the profile when the window closes here.
  std::string before_queue(int64_t step) {
    std::string done;
    if (started_ >= 0 && step == started_ + count_) done = finish(step);
    if (count_ > 0 && step == from_) {
      set_op_profiling(true);
      started_ = step;
    }
    return done;
  }
  // After the last step: the profile of a window the run ended inside, if any.
  std::string finish(int64_t step) {
    if (started_ < 0 || step == started_) return "";
    set_op_profiling(false);
    const int64_t steps = step - started_;
    started_ = -1;
    return "op profile of steps " + std::to_string(step - steps + 1) + "-" + std::to_string(step) +
           " (GPU time per step):\n" + format_op_profile(op_profile_take(), steps);
  }

 private:
  int64_t from_, count_, started_ = -1;
};

}  // namespace

TrainSummary train_images(const ImageTrainConfig& c, const TrainOptions& o,
                          const std::function<void(const TrainProgress&)>& report) {
  Collective* world = o.world;
  const bool lead = world == nullptr || world->rank() == 0;  // writes the folder
  const bool distributed = world != nullptr && world->size() > 1;
  ImageRun run(c);
  if (distributed) run.set_world(world);  // one process: the plain step, or shards in a row
  nlohmann::json resolved = nlohmann::json::object();
  for (const ConfigKey& k : c.keys) resolved[k.name] = k.value;
  if (distributed) check_ranks_share_config(*world, resolved);
  std::unique_ptr<RunFolder> folder;
  if (lead) folder = std::make_unique<RunFolder>(c.out_dir);
  TrainSummary summary;
  const std::string resumed = lead ? start_run(run, *folder, o, summary) : "";
  if (distributed) {  // every rank continues from the checkpoint rank 0 resumed
    const std::string path = world->broadcast_text(resumed);
    if (!lead && !path.empty()) run.load_checkpoint(path);
  }
  if (!lead) return train_steps_only(run, o, *world);
  folder->write_config(resolved);
  write_file_atomic(folder->path() + "/run.json",
                    nlohmann::json{{"command", o.command},
                                   {"device", describe_device(c)},
                                   {"ranks", world ? world->describe() : "1 process"},
                                   {"started", now_utc()},
                                   {"resumed_from", o.resume}}
                            .dump(2) + "\n");

  const bool synthetic = c.dataset == "synthetic";
  const uint64_t sample_seed = c.trainer.seed + kSampleSeedOffset;
  summary.log_path = folder->metrics_path();
  if (o.resume.empty() && synthetic) {
    const SampleQuality q =
        synthetic_quality(run.sample(c.n_samples, sample_seed, c.sampler, false).x0);
    summary.untrained_quality = q.valid_fraction;
    summary.untrained_roughness = q.mean_roughness;
  }
  auto write_samples = [&](const std::string& name, TrainProgress& p) {
    const Tensor x = run.sample(c.n_samples, sample_seed, c.sampler, true).x0;
    summary.samples_path = folder->samples_dir() + "/" + name + ".png";
    write_image_grid(summary.samples_path, x, 8);
    if (synthetic) {
      const SampleQuality q = synthetic_quality(x);
      p.quality = q.valid_fraction;
      p.roughness = q.mean_roughness;
    }
  };
  std::shared_ptr<const ImageDataset> test_split;  // opened at the first evaluation
  auto evaluate = [&](TrainProgress& p) {
    if (!test_split) test_split = open_dataset(c, "test");
    LikelihoodConfig lc = run.likelihood_config();
    lc.timesteps = static_cast<int>(c.eval_timesteps);
    lc.seed = c.trainer.seed;  // the same images, times and noise at every evaluation
    const LikelihoodResult r =
        run.likelihood(*test_split, std::min(c.eval_images, test_split->size()), lc, true);
    p.bits_per_dim = r.bits_per_dim;
    p.bpd_standard_error = r.standard_error;
  };
  // the logged interval's loss per tenth of [0, T)
  constexpr int kBuckets = 10;
  std::vector<double> bucket_sum(kBuckets, 0.0);
  std::vector<int64_t> bucket_count(kBuckets, 0);
  auto checkpoint = [&] {
    summary.last_checkpoint = folder->checkpoint_path(run.step_index());
    run.save_checkpoint(summary.last_checkpoint);
    folder->keep_newest(c.keep_checkpoints);
  };

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_report = start;
  const int64_t first = run.step_index(), total = c.trainer.steps;
  // The rate counts the steps queued since the last report: queueing is where a CPU step
  // runs (and a GPU step's work enters the queue), so each interval holds the steps queued in
  // it. Counting the steps resolved instead gave the first interval half its rate (two
  // steps queued, one resolved) and the last a rate of thousands (nothing left to run).
  int64_t last_report_queued = run.step_index();
  double last_rate = 0;
  std::vector<double> losses;
  // Steps are queued one ahead: step s + 1 is queued before step s is read back, so the host
  // reads step s while the GPU runs step s + 1 and never drains its queue inside a step
  // (docs/training-step.md). After a step whose weights the host needs (checkpoint, samples,
  // evaluation, the last step, a stop), the queue is drained instead. Data-parallel runs
  // resolve each step at once: the other ranks' loop (train_steps_only) takes its collective
  // calls (the stop vote) in that order.
  const int64_t ahead = distributed ? 0 : 1;
  const auto weights_needed_after = [&](int64_t done) {  // done: steps completed
    return done == total || (c.ckpt_every > 0 && done % c.ckpt_every == 0) ||
           (c.sample_every > 0 && done % c.sample_every == 0) ||
           (c.eval_every > 0 && done % c.eval_every == 0);
  };
  bool stop_asked = false;
  // Everything the host does with a resolved step: log, checkpoint, sample, evaluate. `work`:
  // what the step asked of the GPU, its queueing and its read-back (counted where they
  // happen, so a step read back in a drain, nothing queued behind it, still counts its own
  // launches, and the step queued after a drain counts only its own).
  const auto handle = [&](const StepStats& stats, const DeviceWorkCounts& work) {
    TrainProgress p;
    p.stats = stats;
    p.step_work = work;
    stop_asked = stop_asked || any_rank_asks_to_stop(o, world);
    p.step = stats.step + 1;
    p.total = total;
    if (!p.stats.applied) {
      ++summary.skipped_steps;
      CHECK(c.trainer.skip_nonfinite,
            "step " << p.step << ": the loss is " << finite_or_name(p.stats.loss)
                    << " and the gradient norm " << finite_or_name(p.stats.grad_norm)
                    << "; the update was not applied and the run stops ("
                    << (summary.last_checkpoint.empty() ? "no checkpoint of this run yet"
                                                        : "last checkpoint: " + summary.last_checkpoint)
                    << "). Lower 'lr' or raise 'warmup', or set \"nonfinite\": \"skip\"");
    } else {
      losses.push_back(p.stats.loss);
      for (size_t i = 0; i < p.stats.timesteps.size() && i < p.stats.per_sample_loss.size(); ++i) {
        const int b = p.stats.timesteps[i] * kBuckets / c.trainer.schedule.T;
        bucket_sum[b] += p.stats.per_sample_loss[i];
        ++bucket_count[b];
      }
    }
    const auto now = Clock::now();
    const double secs = std::chrono::duration<double>(now - start).count();
    const double interval = std::chrono::duration<double>(now - last_report).count();
    const int64_t queued = run.step_index() - last_report_queued;
    p.images_per_second =
        queued > 0 ? queued * c.batch_size / std::max(interval, 1e-9) : last_rate;
    p.matmul_tflops = run.step_flops() * (p.images_per_second / c.batch_size) * 1e-12;
    const double average = (p.step - first) * c.batch_size / std::max(secs, 1e-9);
    p.eta_seconds = (total - p.step) * c.batch_size / std::max(average, 1e-9);
    const bool last = p.step == total;
    // A stop takes effect once the steps queued behind this one are resolved too.
    const bool stopping = stop_asked && !last && run.steps_in_flight() == 0;
    {
      // Between steps: not part of a step's op profile (sampling runs the same ops).
      const bool profiling = op_profiling();
      set_op_profiling(false);
      // The checkpoint comes first: whatever fails after it, the step is kept.
      if ((c.ckpt_every > 0 && p.step % c.ckpt_every == 0) || last || stopping) checkpoint();
      if (last || (c.sample_every > 0 && p.step % c.sample_every == 0))
        write_samples(last ? "final" : step_name(p.step), p);
      if (c.eval_every > 0 && (p.step % c.eval_every == 0 || last)) evaluate(p);
      set_op_profiling(profiling);
    }
    if (p.step % c.log_every == 0 || last || stopping || p.bits_per_dim >= 0) {
      nlohmann::json line = {{"step", p.step}, {"loss", p.stats.loss},
                             {"grad_norm", p.stats.grad_norm}, {"lr", p.stats.lr},
                             {"img_per_s", p.images_per_second},
                             {"matmul_tflops", p.matmul_tflops}, {"time_s", secs}};
      if (!p.stats.applied) line["skipped"] = true;
      if (c.device == Device::CUDA)  // what one step asked of the GPU (issue: one graph, no syncs)
        line["step_work"] = {{"launches", p.step_work.launches}, {"memsets", p.step_work.memsets},
                             {"copies", p.step_work.copies}, {"host_syncs", p.step_work.host_syncs},
                             {"late_reads", p.step_work.late_reads},
                             {"graph_launches", p.step_work.graph_launches}};
      if (p.quality >= 0) line["quality"] = p.quality;
      if (p.roughness >= 0) line["roughness"] = p.roughness;
      nlohmann::json by_t = nlohmann::json::array();
      for (int b = 0; b < kBuckets; ++b) {
        by_t.push_back(bucket_count[b] ? nlohmann::json(bucket_sum[b] / bucket_count[b]) : nlohmann::json());
        bucket_sum[b] = 0;
        bucket_count[b] = 0;
      }
      line["loss_by_t"] = by_t;
      if (p.bits_per_dim >= 0) {
        line["bits_per_dim"] = p.bits_per_dim;
        line["bpd_se"] = p.bpd_standard_error;
      }
      folder->append_metrics(line);
      if (report) report(p);
      last_report = now;
      last_report_queued = run.step_index();
      last_rate = p.images_per_second;
    }
    if (last) {
      summary.final_bits_per_dim = p.bits_per_dim;
      summary.final_bpd_standard_error = p.bpd_standard_error;
      summary.final_quality = p.quality;
      summary.final_roughness = p.roughness;
    }
    if (stopping) summary.interrupted = true;
  };
  OpProfileWindow profile(first + 2, c.device == Device::CUDA ? c.profile_steps : 0);
  const auto write_profile = [&](const std::string& text) {
    if (text.empty()) return;
    write_file_atomic(folder->path() + "/op_profile.txt", text);
    summary.notes.push_back(text);
  };
  if (c.profile_steps > 0 && c.device != Device::CUDA)
    summary.notes.push_back("profile_steps: the op profile times GPU work; this run is on the CPU");
  if (c.trainer.cuda_graph && c.device != Device::CUDA)
    summary.notes.push_back("cuda_graph: CUDA graphs are GPU work; this run's steps are eager");
  else if (c.trainer.cuda_graph && run.sharded())
    summary.notes.push_back("cuda_graph: sharded steps (micro_batch, data parallelism) run "
                            "eagerly; only whole steps are captured");
  std::deque<DeviceWorkCounts> queued_work;  // the steps in flight's queueing, oldest first
  while (!summary.interrupted && (run.step_index() < total || run.steps_in_flight() > 0)) {
    write_profile(profile.before_queue(run.step_index()));
    if (run.step_index() < total && !stop_asked) {
      const DeviceWorkCounts before = device_work_counts();
      run.queue_step();
      queued_work.push_back(device_work_counts() - before);
    }
    const bool drain =
        stop_asked || run.step_index() == total || weights_needed_after(run.step_index());
    while (!summary.interrupted && run.steps_in_flight() > (drain ? 0 : ahead)) {
      const DeviceWorkCounts before = device_work_counts();
      const StepStats stats = run.resolve();
      const DeviceWorkCounts read_back = device_work_counts() - before;
      handle(stats, queued_work.front() + read_back);
      queued_work.pop_front();
    }
  }
  write_profile(profile.finish(run.step_index()));
  summary.steps_trained = run.step_index() - first;
  if (!summary.interrupted)  // the progressive-generation strip: 8 samples x 10 steps
    write_image_grid(folder->samples_dir() + "/progressive.png",
                     run.progressive(std::min<int64_t>(8, c.n_samples), sample_seed, c.sampler, true), 10);
  summary.report_path = write_run_report(folder->path());
  const size_t tenth = std::max<size_t>(1, losses.size() / 10);
  for (size_t i = 0; i < std::min(tenth, losses.size()); ++i) {
    summary.first_loss += losses[i] / tenth;
    summary.final_loss += losses[losses.size() - 1 - i] / tenth;
  }
  return summary;
}

}  // namespace ddpm
