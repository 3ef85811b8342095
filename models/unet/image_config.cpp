#include "models/unet/image_config.h"

#include <map>
#include <set>

#include "models/data/fashion_mnist.h"

namespace ddpm {

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
  c.cuda_autotune_unverified = r.boolean("cuda_autotune_unverified", c.cuda_autotune_unverified);
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
    "n_samples", "device", "cuda_conv", "cuda_autotune", "cuda_autotune_unverified",
    "cuda_attention", "cpu_kernels",
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

}  // namespace ddpm
