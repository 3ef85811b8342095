// Every value a config accepts runs. ConfigReader range-checks each key on its own; these
// tests take each key to the ends of its range and through its choices (one change, or a few
// that belong together, from a small configs/tiny.json) and require a run that trains three
// steps and samples two images: finite losses, no step refused, samples finite and inside
// the clipping range. Values that are only wrong together (sample_steps past T, channels that
// groups or heads do not divide) must fail when the config is read, naming the file and key,
// not later inside an op.
//
// Written after a sweep of this kind found: beta2 = 0.999999999 (AdamW's 1.0f - beta2 was 0
// in float, v stayed 0 and a weight moved by lr m / eps: the loss went 0.18 -> 4e9 -> 3e13),
// sample_steps past T (an error from inside the schedule after training had run), an odd or
// tiny base_channels (an error from the time-embedding op), and data-set keys the chosen
// data set silently ignored.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include "models/data/fashion_mnist.h"
#include "models/toy/toy_train.h"
#include "models/unet/image_train.h"
#include "tests/config_fixture.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

// A 3-step run of the 8-channel tiny U-Net: ~0.1 s on the CPU.
const std::vector<std::string> kSmall = {"base_channels=8", "groups=4", "batch_size=2", "steps=3",
                                         "n_samples=2",     "sample_steps=3", "warmup=1"};

struct ValueCase {
  std::string name;
  std::vector<std::string> set;
  bool tame = true;  // false: weights may move far (a learning rate of 10)
};

void PrintTo(const ValueCase& c, std::ostream* os) { *os << c.name; }

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

// Three steps and two samples of the small tiny.json with vc's keys set.
void trains_and_samples(const ValueCase& vc) {
  const ImageTrainConfig c = read_image_train_config(test::tiny_json(with(kSmall, vc.set)), "tiny.json");
  ImageRun run(c);
  const std::vector<float> before = run.store().flat_data().to_vector<float>();
  for (int i = 0; i < 3; ++i) {
    const StepStats s = run.step();
    ASSERT_TRUE(std::isfinite(s.loss)) << "step " << i;
    ASSERT_TRUE(s.applied) << "step " << i << ": loss " << s.loss << ", gradient norm " << s.grad_norm;
  }
  // AdamW moves a weight by about lr a step (|m^ / sqrt(v^)| is 1 at the first step and
  // stays near it while the gradients agree), plus the decay's lr wd |w|: three steps, at
  // most 10 lr each beside the decay. The loss cannot say this: the vlb terms' weights span
  // 4 decades over t.
  if (vc.tame) {
    const std::vector<float> after = run.store().flat_data().to_vector<float>();
    double moved = 0, largest = 0;
    for (size_t i = 0; i < after.size(); ++i) {
      moved = std::max<double>(moved, std::fabs(after[i] - before[i]));
      largest = std::max<double>(largest, std::fabs(before[i]));
    }
    const AdamWConfig& a = c.trainer.adam;
    EXPECT_LE(moved, 3 * a.lr * (10 + a.weight_decay * largest));
  }
  const SampleResult r = run.sample(2, 1, c.sampler, /*use_ema=*/true);
  const double bound = c.sampler.clip_x0 ? c.sampler.clip_range : 1e6;
  for (float v : r.x0.to_vector<float>()) {
    ASSERT_TRUE(std::isfinite(v));
    ASSERT_LE(std::fabs(v), bound * (1 + 1e-6));
  }
}

class ImageConfigValue : public ::testing::TestWithParam<ValueCase> {};

TEST_P(ImageConfigValue, TrainsAndSamples) { trains_and_samples(GetParam()); }

// Each key at the ends of its range and through its choices. Keys whose every value only
// chooses a code path (cpu_kernels, precision) are here too: each path must run.
INSTANTIATE_TEST_SUITE_P(
    Keys, ImageConfigValue,
    ::testing::Values(
        // the schedule
        ValueCase{"T_2_ddpm_all_steps", {"T=2", "sampler=ddpm", "sample_steps=0"}},
        ValueCase{"T_2_cosine", {"T=2", "schedule=cosine", "sample_steps=2"}},
        ValueCase{"betas_largest", {"T=10", "beta_start=0.5", "beta_end=0.999"}},
        ValueCase{"betas_smallest", {"beta_start=1e-8", "beta_end=1e-8"}},
        // target and loss
        ValueCase{"epsilon_vlb", {"target=epsilon", "loss=vlb"}},
        ValueCase{"v_hybrid", {"target=v", "loss=hybrid"}},
        ValueCase{"x0_vlb", {"target=x0", "loss=vlb"}},
        ValueCase{"vlb_fixed_small_clamped", {"loss=vlb", "variance=fixed_small", "vlb_clamp=1e-6"}},
        ValueCase{"hybrid_lambda_largest", {"loss=hybrid", "hybrid_lambda=1000000"}},
        ValueCase{"hybrid_lambda_0", {"loss=hybrid", "hybrid_lambda=0"}},
        ValueCase{"vlb_clamp_largest", {"loss=vlb", "vlb_clamp=1e12"}},
        ValueCase{"unfused_hybrid", {"fused_loss=false", "loss=hybrid"}},
        // timestep sampling
        ValueCase{"stratified_batch_1", {"timestep_sampler=stratified", "batch_size=1"}},
        ValueCase{"stratified_T_2_batch_4", {"timestep_sampler=stratified", "T=2", "batch_size=4", "sample_steps=2"}},
        ValueCase{"importance_T_2", {"timestep_sampler=importance", "T=2", "sample_steps=1"}},
        // the optimiser
        ValueCase{"lr_smallest", {"lr=1e-12"}},
        ValueCase{"lr_largest", {"lr=10"}, /*tame=*/false},
        ValueCase{"betas_0", {"beta1=0", "beta2=0"}},
        ValueCase{"betas_largest_adam", {"beta1=0.999999", "beta2=0.999999999"}},
        ValueCase{"adam_eps_largest", {"adam_eps=1"}},
        ValueCase{"adam_eps_smallest", {"adam_eps=1e-20"}},
        ValueCase{"weight_decay_largest", {"weight_decay=10"}},
        ValueCase{"warmup_longest", {"warmup=1000000000"}},
        ValueCase{"no_warmup_cosine", {"warmup=0", "lr_decay=cosine"}},
        ValueCase{"one_step_cosine", {"steps=1", "lr_decay=cosine"}},
        ValueCase{"no_clipping", {"grad_clip=0"}},
        ValueCase{"clip_smallest", {"grad_clip=1e-12"}},
        ValueCase{"ema_0", {"ema_decay=0"}},
        ValueCase{"ema_largest", {"ema_decay=0.99999999", "ema_warmup=false"}},
        ValueCase{"seed_largest", {"seed=9223372036854775807"}},
        ValueCase{"lr_largest_skipping", {"nonfinite=skip", "lr=10"}, /*tame=*/false},
        // sampling
        ValueCase{"ddpm_1_step", {"sampler=ddpm", "sample_steps=1"}},
        ValueCase{"ddpm_fixed_small", {"sampler=ddpm", "variance=fixed_small"}},
        ValueCase{"ddim_all_steps", {"sampler=ddim", "sample_steps=0", "T=20"}},
        ValueCase{"ddim_T_steps", {"sampler=ddim", "sample_steps=1000"}},
        ValueCase{"ddim_eta_largest", {"sampler=ddim", "eta=10"}},
        ValueCase{"no_clip_x0", {"clip_x0=false"}},
        ValueCase{"clip_range_smallest", {"clip_range=1e-6"}},
        ValueCase{"clip_range_largest", {"clip_range=1e6"}},
        // batches and data
        ValueCase{"micro_batch_1", {"micro_batch=1"}},
        ValueCase{"batch_1", {"batch_size=1"}},
        ValueCase{"one_image_of_data", {"synthetic_size=1"}},
        ValueCase{"no_flips", {"random_flip=false"}},
        // the U-Net
        ValueCase{"dropout_largest", {"dropout=0.99"}},
        ValueCase{"groups_1", {"groups=1"}},
        ValueCase{"a_channel_a_group", {"groups=8"}},
        ValueCase{"a_channel_a_head", {"attention_heads=8"}},
        ValueCase{"base_channels_smallest", {"base_channels=4", "groups=2"}},
        ValueCase{"three_res_blocks", {"num_res_blocks=3"}},
        ValueCase{"one_level", {"channel_mult=[1]", "attention_resolutions=[32]"}},
        ValueCase{"no_attention", {"attention_resolutions=[]"}},
        ValueCase{"down_to_1x1", {"channel_mult=[1,1,1,1,1,1]", "attention_resolutions=[1]"}},
        ValueCase{"upsample_by_phase", {"upsample_by_phase=true"}},
        ValueCase{"upsample_by_nearest", {"upsample_by_phase=false"}},
        // kernels and precision
        ValueCase{"reference_kernels", {"cpu_kernels=reference"}},
        ValueCase{"tf32", {"precision=tf32"}},
        ValueCase{"bf16", {"precision=bf16"}},  // bf16 activations, the default with it
        ValueCase{"bf16_fp32_activations", {"precision=bf16", "activations=fp32"}},
        ValueCase{"bf16_reference", {"precision=bf16", "cpu_kernels=reference"}}),
    [](const ::testing::TestParamInfo<ValueCase>& param_info) { return param_info.param.name; });

// Fashion-MNIST at each shape the dataset key allows: 28x28 grey (its own size; one halving to
// 14), 28x28 as RGB, and padded to 32x32 with a class filter.
TEST(DatasetConfigValue, FashionMnistAtEachShape) {
  if (!std::filesystem::exists(std::string(FashionMnist::kDefaultDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << FashionMnist::kDefaultDir << " not installed (apt install dataset-fashion-mnist)";
  const std::vector<ValueCase> cases = {
      {"grey_28", {"dataset=fashion_mnist", "image_size=28", "in_channels=1", "attention_resolutions=[14]"}},
      {"rgb_28", {"dataset=fashion_mnist", "image_size=28", "in_channels=3", "attention_resolutions=[14]"}},
      {"grey_32_two_classes", {"dataset=fashion_mnist", "in_channels=1", "classes=[0,9]"}}};
  for (const ValueCase& vc : cases) {
    SCOPED_TRACE(vc.name);
    trains_and_samples(vc);
  }
}

// The 2-D trainer's own keys at their ends (the recipe keys are the image trainer's).
TEST(ToyConfigValue, TrainsAndSamples) {
  const std::vector<std::vector<std::string>> cases = {
      {"dataset=8gaussians"}, {"dataset=swissroll"}, {"hidden=1", "layers=1"},
      {"time_embed_dim=4", "input_embed_dim=0"}, {"input_embed_dim=4"}, {"batch_size=1"},
      {"train_points=1"}, {"T=2", "sample_steps=0"}, {"sampler=ddim", "sample_steps=1"}};
  for (const auto& set : cases) {
    nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/moons.json");
    for (const std::string& o : with({"steps=3", "n_samples=2", "sample_steps=3", "hidden=8",
                                      "layers=1", "batch_size=4", "warmup=1"}, set))
      apply_override(j, o);
    const ToyResult r = train_toy(read_toy_config(j, "moons.json"), false, nullptr);
    EXPECT_TRUE(std::isfinite(r.first_loss) && std::isfinite(r.final_loss)) << j.dump();
    EXPECT_TRUE(std::isfinite(r.swd_samples)) << j.dump();
  }
}

// Values wrong only together: refused as the config is read, naming the file and the key.
TEST(ConfigValues, WhatKeysDisagreeOnNamesTheFileAndKey) {
  const auto refused = [](const std::vector<std::string>& set,
                          std::initializer_list<const char*> message) {
    expect_error([&] { read_image_train_config(test::tiny_json(set), "tiny.json"); }, message);
  };
  refused({"T=20"}, {"tiny.json: key 'sample_steps' 50 is more than the schedule's T = 20"});
  refused({"base_channels=2", "groups=1"}, {"tiny.json: key 'base_channels'", "[4, 4096], got 2"});
  refused({"base_channels=9", "groups=1"}, {"tiny.json: key 'base_channels' 9 is odd"});
  refused({"channel_mult=[]"}, {"tiny.json: key 'channel_mult' must not be empty"});
  refused({"channel_mult=[1,1,1,1,1,1,1]"},
          {"tiny.json: key 'image_size' 32 does not halve cleanly 6 times"});
  refused({"groups=3"}, {"tiny.json: key 'groups'", "16 channels (base_channels 16 x 1)",
                         "do not split into 3 groups"});
  refused({"attention_heads=3"},
          {"tiny.json: key 'attention_heads'", "16 channels do not split into 3 heads"});
  refused({"attention_resolutions=[8]"},
          {"tiny.json: key 'attention_resolutions'", "8 is not the resolution of any level (32, 16)"});
  refused({"classes=[3]"}, {"tiny.json: key 'classes' filters cifar10's and fashion_mnist's labels"});
  refused({"data_dir=/data"}, {"tiny.json: key 'data_dir' names the files"});
  refused({"dataset=fashion_mnist", "synthetic_size=10"},
          {"tiny.json: key 'synthetic_size' sizes the synthetic dataset; fashion_mnist has"});
  nlohmann::json toy = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/moons.json");
  apply_override(toy, "T=100");
  expect_error([&] { read_toy_config(toy, "moons.json"); },
               {"moons.json: key 'sample_steps' 250 is more than the schedule's T = 100"});
}

}  // namespace
}  // namespace ddpm
