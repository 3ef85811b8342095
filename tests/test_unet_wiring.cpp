// The U-Net's forward (models/unet/unet.cpp) against the DDPM reference's structure written
// out again here from diffusion_tf/models/unet.py (model, resnet_block, attn_block): the
// same parameters looked up by name, unfused ops (conv2d, group_norm, silu, linear,
// broadcast_add, concat, upsample_nearest2x) and the attention as host loops in double over
// q, k, v taken from the packed layer's three column blocks. In double, every parameter
// random first: a fresh network's zero-initialised conv2, proj and conv_out would hide most
// of the wiring (a missing residual, skip or time embedding changes nothing they multiply).
// The parameter count and the gradients are test_unet.cpp's; this is the function.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "models/unet/unet.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

// A small configuration with every kind of stage: two levels (a downsample and an
// upsample), a 1x1 skip where channels change, attention at the 4x4 level and in the middle.
UNetConfig small_config(bool by_phase) {
  UNetConfig c;
  c.image_size = 8;
  c.in_channels = 3;
  c.base_channels = 8;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 2;
  c.attention_resolutions = {4};
  c.attention_heads = 1;
  c.dropout = 0.0;
  c.groups = 4;
  c.upsample_by_phase = by_phase;
  return c;
}

struct Reference {
  const ParameterStore& s;
  int64_t groups;

  Tensor p(const std::string& name) const { return s.find(name); }
  Tensor dense(const Tensor& x, const std::string& n) const {
    return linear(x, p(n + ".w"), p(n + ".b"));
  }
  Tensor conv(const Tensor& x, const std::string& n,
              const Conv2dParams& cp = Conv2dParams::same(3)) const {
    return conv2d(x, p(n + ".w"), p(n + ".b"), cp);
  }
  Tensor norm(const Tensor& x, const std::string& n) const {
    return group_norm(x, p(n + ".gamma"), p(n + ".beta"), groups, 1e-6);
  }

  // resnet_block: x + h, or nin_shortcut(x) + h when the channels change.
  Tensor resnet_block(const Tensor& x, const Tensor& temb, const std::string& n,
                      int64_t out) const {
    Tensor h = conv(silu(norm(x, n + ".norm1")), n + ".conv1");
    h = broadcast_add(h, dense(silu(temb), n + ".temb_proj"));
    h = conv(silu(norm(h, n + ".norm2")), n + ".conv2");
    const Tensor skip = x.shape()[3] != out ? dense(x, n + ".skip") : x;
    return add(skip, h);
  }

  // attn_block: x + proj_out(softmax(q k^T / sqrt(C)) v), q k v = nin(norm(x)) each.
  Tensor attn_block(const Tensor& x, const std::string& n) const {
    const Shape& sh = x.shape();
    const int64_t N = sh[0], L = sh[1] * sh[2], C = sh[3];
    const std::vector<double> h = test::values(norm(x, n + ".norm"));
    const std::vector<double> w = test::values(p(n + ".qkv.w"));  // (C, 3C): [q | k | v]
    const std::vector<double> b = test::values(p(n + ".qkv.b"));
    auto project = [&](int64_t img, int64_t l, int part, int64_t c) {
      double acc = b[part * C + c];
      for (int64_t i = 0; i < C; ++i)
        acc += h[(img * L + l) * C + i] * w[i * 3 * C + part * C + c];
      return acc;
    };
    std::vector<double> mixed(static_cast<size_t>(N * L * C));
    for (int64_t img = 0; img < N; ++img) {
      std::vector<double> q(L * C), k(L * C), v(L * C);
      for (int64_t l = 0; l < L; ++l)
        for (int64_t c = 0; c < C; ++c) {
          q[l * C + c] = project(img, l, 0, c);
          k[l * C + c] = project(img, l, 1, c);
          v[l * C + c] = project(img, l, 2, c);
        }
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> score(L);
        double top = -1e300, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < C; ++c) dot += q[i * C + c] * k[j * C + c];
          score[j] = dot / std::sqrt(static_cast<double>(C));
          top = std::max(top, score[j]);
        }
        for (double& e : score) total += (e = std::exp(e - top));
        for (int64_t c = 0; c < C; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < L; ++j) acc += score[j] / total * v[j * C + c];
          mixed[(img * L + i) * C + c] = acc;
        }
      }
    }
    const Tensor out = dense(Tensor::from_vector(Shape{N, L, C}, mixed), n + ".proj");
    return add(x, reshape(out, sh));
  }

  // model(): the reference's loop over levels, hs the list of skips.
  Tensor forward(const UNetConfig& c, const Tensor& x, const std::vector<int>& t) const {
    const Tensor tt = Tensor::from_vector(Shape{static_cast<int64_t>(t.size())},
                                          std::vector<double>(t.begin(), t.end()));
    Tensor temb = dense(timestep_embedding(tt, c.base_channels), "temb.dense0");
    temb = dense(silu(temb), "temb.dense1");
    const int levels = static_cast<int>(c.channel_mult.size());
    std::vector<Tensor> hs = {conv(x, "conv_in")};
    auto attends = [&](const Tensor& h) {
      for (int64_t r : c.attention_resolutions)
        if (h.shape()[1] == r) return true;
      return false;
    };
    for (int l = 0; l < levels; ++l) {
      const std::string lv = "down." + std::to_string(l);
      for (int i = 0; i < c.num_res_blocks; ++i) {
        Tensor h = resnet_block(hs.back(), temb, lv + ".res" + std::to_string(i),
                                c.base_channels * c.channel_mult[l]);
        if (attends(h)) h = attn_block(h, lv + ".attn" + std::to_string(i));
        hs.push_back(h);
      }
      if (l != levels - 1) hs.push_back(conv(hs.back(), lv + ".downsample", Conv2dParams::downsample()));
    }
    Tensor h = hs.back();
    const int64_t mid = h.shape()[3];
    h = resnet_block(h, temb, "mid.res1", mid);
    h = attn_block(h, "mid.attn");
    h = resnet_block(h, temb, "mid.res2", mid);
    for (int l = levels - 1; l >= 0; --l) {
      const std::string lv = "up." + std::to_string(l);
      for (int i = 0; i <= c.num_res_blocks; ++i) {
        h = resnet_block(concat({h, hs.back()}), temb, lv + ".res" + std::to_string(i),
                         c.base_channels * c.channel_mult[l]);
        hs.pop_back();
        if (attends(h)) h = attn_block(h, lv + ".attn" + std::to_string(i));
      }
      if (l != 0) h = conv(upsample_nearest2x(h), lv + ".upsample");
    }
    EXPECT_TRUE(hs.empty()) << "every skip is used once";
    return conv(silu(norm(h, "norm_out")), "conv_out");
  }
};

class UNetWiring : public ::testing::TestWithParam<bool> {};

TEST_P(UNetWiring, ForwardIsTheReferencesStructure) {
  const UNetConfig c = small_config(GetParam());
  ParameterStore store;
  const UNet net(store, c);
  store.finalize(Device::CPU, DType::F64, 1);
  test::redraw_parameters(store);
  NoGradGuard no_grad;
  const Tensor x = test::random_tensor({2, 8, 8, 3}, 1);
  const std::vector<int> t = {3, 870};
  const std::vector<double> got = test::values(net.forward(x, t, ForwardMode{}));
  const std::vector<double> want = test::values(Reference{store, c.groups}.forward(c, x, t));
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  ASSERT_GT(scale, 0.1) << "the output must not be (nearly) zero";
  // Double throughout; only the order of the sums differs (fused ops, the upsamplers by
  // phase, the attention's loops): ~1e-15 relative a layer, 1e-10 of the range in all.
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-10 * scale) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Upsampling, UNetWiring, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& param_info) {
                           return param_info.param ? "by_phase" : "upsample_then_conv";
                         });

}  // namespace
}  // namespace ddpm
