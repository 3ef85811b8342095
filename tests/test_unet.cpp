// The U-Net: parameter count against the reference, the reference's zero initialisation,
// gradients of the whole network against finite differences, and config validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "models/config_reader.h"
#include "models/unet/unet.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

UNetConfig config_from_file(const std::string& name) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/" + name);
  ConfigReader r(j, name);
  return read_unet_config(r, UNetConfig{});
}

int64_t parameter_count(const UNetConfig& c) {
  ParameterStore store;
  UNet net(store, c);
  return store.count();
}

// The DDPM CIFAR-10 U-Net has 35,746,307 parameters. Derivation (ch = 128, temb = 512):
//   time embedding   128*512+512 + 512*512+512                                   = 328,704
//   conv_in          3*3*3*128 + 128                                              =   3,584
//   a ResBlock(cin -> cout) has GN(cin) 2cin, conv 9 cin cout + cout, temb proj 512 cout +
//   cout, GN(cout) 2cout, conv 9 cout^2 + cout, and cin cout + cout for a 1x1 skip if
//   cin != cout; an attention block on C has GN 2C and four C x C layers with bias (q, k, v,
//   proj) = 4(C^2 + C); downsample/upsample convs 9 C^2 + C.
// Summed over the down path (8 ResBlocks, 2 attention blocks at 16x16, 3 downsamples), the
// middle (2 ResBlocks, 1 attention), the up path (12 ResBlocks on concatenated skips,
// 3 attention blocks, 3 upsamples) and GN + conv_out (256 + 3*3*128*3 + 3), this is the
// figure an independent count of diffusion_tf/models/unet.py gives, and the 35.7M the
// paper reports.
TEST(UNet, CifarConfigHasTheReferenceParameterCount) {
  EXPECT_EQ(parameter_count(config_from_file("cifar10_ddpm.json")), 35746307);
  EXPECT_EQ(parameter_count(config_from_file("tiny.json")), 177427);
}

TEST(UNet, ZeroInitialisedWhereTheReferenceIs) {
  ParameterStore store;
  UNet net(store, config_from_file("tiny.json"));
  store.finalize(Device::CPU, DType::F32, 3);
  int zero = 0;
  for (const Tensor& p : store.parameters()) {
    const std::string& n = p.name();
    const bool attention_proj = n.find("attn") != std::string::npos &&
                                n.size() > 7 && n.substr(n.size() - 7) == ".proj.w";
    const bool should_be_zero =
        n == "conv_out.w" || n.find("conv2.w") != std::string::npos || attention_proj;
    const std::vector<float> v = p.to_vector<float>();
    const bool all_zero = std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; });
    if (should_be_zero) {
      EXPECT_TRUE(all_zero) << n;
      ++zero;
    } else if (n.size() > 2 && n.substr(n.size() - 2) == ".w") {
      EXPECT_FALSE(all_zero) << n << " should be randomly initialised";
    }
  }
  // tiny: conv_out + 7 ResBlocks' conv2 + 5 attention projections
  EXPECT_EQ(zero, 13);
  // Hence the untrained network predicts exactly 0.
  const Tensor out = net.forward(test::random_tensor({2, 32, 32, 3}, 1, DType::F32), {5, 900}, {});
  for (float v : out.to_vector<float>()) ASSERT_EQ(v, 0.0f);
  tape().clear();
}

// A U-Net small enough for finite differences: 8x8 images, 4 base channels, two levels (one
// upsampler), attention at 4x4 with 2 heads, dropout on (its mask is fixed by (seed, step)).
UNetConfig small_unet() {
  UNetConfig c;
  c.image_size = 8;
  c.base_channels = 4;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.attention_resolutions = {4};
  c.attention_heads = 2;
  c.groups = 2;
  c.dropout = 0.2;
  return c;
}

// In f64, every parameter re-drawn at random (test::redraw_parameters), so that no
// zero-initialised layer hides a gradient.
TEST(UNet, GradientsMatchFiniteDifferences) {
  ParameterStore store;
  UNet net(store, small_unet());
  store.finalize(Device::CPU, DType::F64, 1);
  test::redraw_parameters(store);
  const ForwardMode mode{true, 7, 3};
  std::vector<Tensor> inputs = {test::random_tensor({2, 8, 8, 3}, 1)};
  for (const char* name : {"conv_in.w", "temb.dense0.w", "down.1.attn0.qkv.w", "mid.res1.norm1.gamma",
                           "up.1.upsample.w", "up.0.res1.skip.w", "conv_out.b"})
    inputs.push_back(store.find(name));
  test::expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return net.forward(in[0], {3, 700}, mode); }, inputs);
}

// upsample_by_phase (the default) computes the upsamplers as four 2x2 convolutions of the
// small map (engine/ops.h upsample_conv3x3), false as the reference writes them: the same
// function of the same parameters, so in double the outputs and every gradient agree to the
// order of the sums. Three levels: two upsamplers.
TEST(UNet, UpsampleByPhaseIsTheSameNetwork) {
  std::vector<std::vector<double>> runs[2];
  for (const bool by_phase : {false, true}) {
    UNetConfig c = small_unet();
    c.channel_mult = {1, 2, 2};
    c.upsample_by_phase = by_phase;
    ParameterStore store;
    UNet net(store, c);
    store.finalize(Device::CPU, DType::F64, 1);
    test::redraw_parameters(store);
    const Tensor x = test::random_tensor({2, 8, 8, 3}, 1);
    const Tensor y = net.forward(x, {3, 700}, ForwardMode{true, 7, 3});
    backward(sum(mul(y, test::random_tensor(y.shape(), 2))));
    runs[by_phase].push_back(test::values(y));
    for (const Tensor& p : store.parameters()) runs[by_phase].push_back(test::values(p.grad()));
  }
  ASSERT_EQ(runs[1].size(), runs[0].size());
  for (size_t k = 0; k < runs[0].size(); ++k) {
    double scale = 0;
    for (double v : runs[0][k]) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < runs[0][k].size(); ++i)
      ASSERT_NEAR(runs[1][k][i], runs[0][k][i], 1e-12 * scale + 1e-300)
          << (k == 0 ? "output" : "gradient of parameter " + std::to_string(k - 1)) << " element "
          << i;
  }
}

// The reference builds q, k and v as three C -> C layers (variance_scaling fan_avg = C):
// our packed (C, 3C) weight is uniform on +-sqrt(3 / C), not on the +-sqrt(3 / 2C) a
// (C, 3C) layer's fan_avg of 2C would give (q, k, v 1/sqrt(2) too small).
TEST(UNet, AttentionQkvIsInitialisedAsThreeSeparateLayers) {
  UNetConfig c;
  c.image_size = 8;
  c.base_channels = 16;
  c.channel_mult = {1};
  c.num_res_blocks = 1;
  c.attention_resolutions = {8};
  c.groups = 4;
  ParameterStore store;
  UNet net(store, c);
  store.finalize(Device::CPU, DType::F64, 3);
  const std::vector<double> w = test::values(store.find("down.0.attn0.qkv.w"));
  ASSERT_EQ(w.size(), 16u * 48u);
  const double bound = std::sqrt(3.0 / 16.0);
  double largest = 0, sq = 0;
  for (double v : w) {
    largest = std::max(largest, std::fabs(v));
    sq += v * v;
  }
  EXPECT_LE(largest, bound);
  EXPECT_GT(largest, 0.97 * bound);  // 768 uniform draws: the largest is within 1% of the bound
  // variance of U(-b, b) is b^2 / 3 = 1 / C; 768 samples give it to ~5%
  EXPECT_NEAR(sq / w.size(), 1.0 / 16.0, 0.15 / 16.0);
}

// Every key reaches its own field (values no default and no other key has).
TEST(UNet, EveryKeyReachesItsField) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o : {"image_size=48", "in_channels=2", "base_channels=24", "channel_mult=[1,3,2]",
                        "num_res_blocks=3", "attention_resolutions=[24,12]", "attention_heads=6",
                        "dropout=0.35", "groups=12", "upsample_by_phase=false"})
    apply_override(j, o);
  ConfigReader r(j, "tiny.json");
  const UNetConfig c = read_unet_config(r, UNetConfig{});
  EXPECT_EQ(c.image_size, 48);
  EXPECT_EQ(c.in_channels, 2);
  EXPECT_EQ(c.base_channels, 24);
  EXPECT_EQ(c.channel_mult, (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(c.num_res_blocks, 3);
  EXPECT_EQ(c.attention_resolutions, (std::vector<int64_t>{24, 12}));
  EXPECT_EQ(c.attention_heads, 6);
  EXPECT_EQ(c.dropout, 0.35);
  EXPECT_EQ(c.groups, 12);
  EXPECT_FALSE(c.upsample_by_phase);
}

TEST(UNet, ConfigErrorsNameTheKey) {
  auto read = [](const std::string& override_) {
    nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
    apply_override(j, override_);
    ConfigReader r(j, "tiny.json");
    return read_unet_config(r, UNetConfig{});
  };
  expect_error([&] { read("groups=5"); }, {"key 'groups'", "16 channels", "5 groups"});
  expect_error([&] { read("image_size=31"); }, {"key 'image_size'", "31", "halve"});
  expect_error([&] { read("channel_mult=[1, \"2\"]"); }, {"key 'channel_mult'"});
  expect_error([&] { read("attention_heads=3"); }, {"key 'attention_heads'", "3 heads"});
  expect_error([&] { read("upsample_by_phase=1"); },
               {"key 'upsample_by_phase'", "must be true or false", "got 1"});
}

}  // namespace
}  // namespace ddpm
