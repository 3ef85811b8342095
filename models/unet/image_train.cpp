#include "models/unet/image_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "models/data/cifar10.h"
#include "models/data/synthetic_images.h"

namespace ddpm {

namespace {

constexpr const char* kFormat = "ddpm-engine/1";
constexpr uint64_t kSampleSeedOffset = 0x5A4D;  // sampling seed = run seed + this

std::shared_ptr<const ImageDataset> open_dataset(const ImageTrainConfig& c) {
  if (c.dataset == "synthetic")
    return std::make_shared<SyntheticImages>(c.synthetic_size, c.trainer.seed);
  std::vector<int> classes(c.classes.begin(), c.classes.end());
  return std::make_shared<Cifar10>(Cifar10::load(c.data_dir, true, classes));
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

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
  c.sampler = read_sampler_config(r, SamplerConfig{});
  c.sampler.target = c.trainer.target;
  c.dataset = r.choice("dataset", c.dataset, {"synthetic", "cifar10"});
  c.data_dir = r.string("data_dir", c.data_dir);
  c.classes = r.integers("classes", c.classes, 0, 9);
  c.synthetic_size = r.integer("synthetic_size", c.synthetic_size, 1, 1'000'000'000);
  c.random_flip = r.boolean("random_flip", c.random_flip);
  c.batch_size = r.integer("batch_size", c.batch_size, 1, 1'000'000);
  c.n_samples = r.integer("n_samples", c.n_samples, 1, 100'000);
  c.log_every = r.integer("log_every", c.log_every, 1, 1'000'000'000);
  c.sample_every = r.integer("sample_every", c.sample_every, 0, 1'000'000'000);
  c.ckpt_every = r.integer("ckpt_every", c.ckpt_every, 0, 1'000'000'000);
  c.keep_checkpoints = r.integer("keep_checkpoints", c.keep_checkpoints, 1, 1'000'000);
  c.out_dir = r.string("out_dir", c.out_dir);
  c.device = r.choice("device", "cpu", {"cpu", "cuda"}) == "cuda" ? Device::CUDA : Device::CPU;
  const std::string conv = r.choice("cuda_conv", "tiled", {"tiled", "tensor_core", "naive"});
  c.cuda_conv = conv == "naive"         ? ConvAlgorithm::Naive
                : conv == "tensor_core" ? ConvAlgorithm::TensorCore
                                        : ConvAlgorithm::Tiled;
  c.cuda_attention = r.choice("cuda_attention", "fused", {"fused", "straightforward"}) == "fused"
                         ? AttentionAlgorithm::Fused
                         : AttentionAlgorithm::Straightforward;
  r.finish();
  CHECK(c.dataset != "cifar10" || !c.data_dir.empty(),
        context << ": key 'data_dir' is required with \"dataset\": \"cifar10\"");
  CHECK(c.dataset != "synthetic" || c.unet.image_size == 32,
        context << ": key 'image_size' must be 32 for the synthetic dataset");
  CHECK(c.unet.in_channels == 3, context << ": key 'in_channels' must be 3 for RGB datasets");
  return c;
}

ImageRun::ImageRun(const ImageTrainConfig& c, bool with_data) : config_(c) {
  CHECK(c.device == Device::CPU || cuda_available(),
        "device \"cuda\" requested but " << cuda_unavailable_reason());
  set_conv_algorithm(c.cuda_conv);  // process-wide: the kernels the CUDA ops run
  set_attention_algorithm(c.cuda_attention);
  unet_ = std::make_unique<UNet>(store_, c.unet);
  store_.finalize(c.device, DType::F32, c.trainer.seed);
  trainer_ = std::make_unique<DiffusionTrainer>(store_, c.trainer);
  if (with_data)
    batcher_ = std::make_unique<ImageBatcher>(open_dataset(c), c.batch_size, c.trainer.seed,
                                              c.random_flip);
}

Denoiser ImageRun::denoiser() const {
  const UNet* net = unet_.get();
  return [net](const Tensor& x, const std::vector<int>& t) {
    return net->forward(x, t, ForwardMode{});
  };
}

StepStats ImageRun::step() {
  CHECK(batcher_, "ImageRun::step without data");
  const int64_t s = trainer_->step_index();
  const UNet* net = unet_.get();
  const uint64_t seed = config_.trainer.seed;
  const Denoiser train_model = [net, seed, s](const Tensor& x, const std::vector<int>& t) {
    return net->forward(x, t, ForwardMode{true, seed, static_cast<uint64_t>(s)});
  };
  if (!config_.trainer.fused_loss)
    return trainer_->step(train_model, batcher_->batch(s).to(config_.device));
  ImageBatcher::Bytes b = batcher_->batch_bytes(s);
  return trainer_->step(train_model, TrainBatch{b.images.to(config_.device), b.flip, b.flip_seed,
                                                b.flip_stream, b.flip_first});
}

void ImageRun::save_checkpoint(const std::string& path) const {
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
  const int64_t step = std::stoll(meta("step"));
  tr.set_step_index(step);
  tr.optimizer().set_steps_taken(step);
  tr.timestep_sampler().load_state(nlohmann::json::parse(meta("timestep_sampler")));
}

SampleResult ImageRun::sample(int64_t n, uint64_t seed, const SamplerConfig& sc, bool use_ema,
                              const Tensor& start) {
  Ema* ema = trainer_->ema();
  Tensor saved;
  if (use_ema && ema) {
    saved = store_.flat_data().clone();
    load_flat(store_, ema->weights());
  }
  const int64_t s = config_.unet.image_size;
  SampleResult r = ddpm::sample(trainer_->schedule(), denoiser(), sc,
                                Shape{n, s, s, config_.unet.in_channels}, seed, config_.device,
                                start);
  if (saved.defined()) load_flat(store_, saved);
  return r;
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const SafetensorsFile f = read_safetensors(path);
  CheckpointInfo info;
  auto it = f.metadata.find("config");
  CHECK(it != f.metadata.end(), "checkpoint '" << path << "' has no config in its metadata");
  info.config = nlohmann::json::parse(it->second, nullptr, false);
  CHECK(!info.config.is_discarded(), "checkpoint '" << path << "': its config is not valid JSON");
  auto st = f.metadata.find("step");
  CHECK(st != f.metadata.end(), "checkpoint '" << path << "' has no step in its metadata");
  info.step = std::stoll(st->second);
  info.tensors = static_cast<int64_t>(f.tensors.size());
  return info;
}

TrainSummary train_images(const ImageTrainConfig& c, const std::string& resume,
                          const std::function<void(const TrainProgress&)>& report) {
  ImageRun run(c);
  TrainSummary summary;
  const bool synthetic = c.dataset == "synthetic";
  const uint64_t sample_seed = c.trainer.seed + kSampleSeedOffset;
  make_directories(c.out_dir + "/samples");
  make_directories(c.out_dir + "/ckpt");
  summary.log_path = c.out_dir + "/metrics.jsonl";
  std::string log;
  if (!resume.empty()) {
    run.load_checkpoint(resume);
    const std::vector<uint8_t> old = std::filesystem::exists(summary.log_path)
                                         ? read_file(summary.log_path)
                                         : std::vector<uint8_t>{};
    log.assign(old.begin(), old.end());
  } else if (synthetic) {
    const SampleQuality q =
        synthetic_quality(run.sample(c.n_samples, sample_seed, c.sampler, false).x0);
    summary.untrained_quality = q.valid_fraction;
    summary.untrained_roughness = q.mean_roughness;
  }
  auto write_samples = [&](const std::string& name, TrainProgress& p) {
    const Tensor x = run.sample(c.n_samples, sample_seed, c.sampler, true).x0;
    summary.samples_path = c.out_dir + "/samples/" + name + ".png";
    write_image_grid(summary.samples_path, x, 8);
    if (synthetic) {
      const SampleQuality q = synthetic_quality(x);
      p.quality = q.valid_fraction;
      p.roughness = q.mean_roughness;
    }
  };
  auto checkpoint = [&] {
    summary.last_checkpoint = c.out_dir + "/ckpt/" + step_name(run.step_index()) + ".safetensors";
    run.save_checkpoint(summary.last_checkpoint);
    std::vector<std::string> all;
    for (const auto& e : std::filesystem::directory_iterator(c.out_dir + "/ckpt"))
      if (e.path().extension() == ".safetensors") all.push_back(e.path().string());
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + c.keep_checkpoints < all.size(); ++i) std::filesystem::remove(all[i]);
  };

  const auto start = std::chrono::steady_clock::now();
  const int64_t first = run.step_index(), total = c.trainer.steps;
  std::vector<double> losses;
  while (run.step_index() < total) {
    TrainProgress p;
    p.stats = run.step();
    p.step = run.step_index();
    p.total = total;
    losses.push_back(p.stats.loss);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    p.images_per_second = (p.step - first) * c.batch_size / std::max(secs, 1e-9);
    p.eta_seconds = (total - p.step) * c.batch_size / std::max(p.images_per_second, 1e-9);
    const bool last = p.step == total;
    if (last || (c.sample_every > 0 && p.step % c.sample_every == 0))
      write_samples(last ? "final" : step_name(p.step), p);
    if (p.step % c.log_every == 0 || last) {
      nlohmann::json line = {{"step", p.step}, {"loss", p.stats.loss},
                             {"grad_norm", p.stats.grad_norm}, {"lr", p.stats.lr},
                             {"img_per_s", p.images_per_second}, {"time_s", secs}};
      if (p.quality >= 0) line["quality"] = p.quality;
      if (p.roughness >= 0) line["roughness"] = p.roughness;
      log += line.dump() + "\n";
      write_file_atomic(summary.log_path, log);
      if (report) report(p);
    }
    if ((c.ckpt_every > 0 && p.step % c.ckpt_every == 0) || last) checkpoint();
    if (last) {
      summary.final_quality = p.quality;
      summary.final_roughness = p.roughness;
    }
  }
  const size_t tenth = std::max<size_t>(1, losses.size() / 10);
  for (size_t i = 0; i < std::min(tenth, losses.size()); ++i) {
    summary.first_loss += losses[i] / tenth;
    summary.final_loss += losses[losses.size() - 1 - i] / tenth;
  }
  return summary;
}

}  // namespace ddpm
