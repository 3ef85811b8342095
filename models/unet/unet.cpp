#include "models/unet/unet.h"

#include <algorithm>

namespace ddpm {

namespace {

// + step * 4096 + layer + shard * 2^42 (step < 2^30, shard < 2^14: below every other family)
constexpr uint64_t kDropoutStream = 0xD7000000000000ull;

bool contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class ResBlock {
 public:
  ResBlock(ParameterStore& s, const std::string& name, int64_t in, int64_t out, int64_t temb,
           const UNetConfig& c, int layer)
      : norm1_(s, name + ".norm1", in, c.groups, c.norm_eps),
        conv1_(s, name + ".conv1", in, out, 3, Conv2dParams::same(3)),
        temb_proj_(s, name + ".temb_proj", temb, out),
        norm2_(s, name + ".norm2", out, c.groups, c.norm_eps),
        conv2_(s, name + ".conv2", out, out, 3, Conv2dParams::same(3), /*init_scale=*/0.0),
        dropout_(c.dropout),
        layer_(layer) {
    if (in != out) skip_ = Linear(s, name + ".skip", in, out);  // the reference's "nin"
    has_skip_ = in != out;
  }

  Tensor operator()(const Tensor& x, const Tensor& temb_act, const ForwardMode& m,
                    const uint64_t* step_on_device) const {
    // conv1 + the time embedding, and conv2 + the skip: each one op (conv2d_add), fused
    // into the convolution's epilogue on CUDA v4.
    // norm2 + SiLU + dropout: one op (the mask drawn in the norm's own pass on CUDA).
    Tensor h = conv1_(norm1_.silu(x), temb_proj_(temb_act), Tensor());
    h = m.train && dropout_ > 0
            ? norm2_.silu_dropout(h, dropout_, m.seed, dropout_stream(m, step_on_device))
            : norm2_.silu(h);
    return conv2_(h, Tensor(), has_skip_ ? skip_(x) : x);
  }

 private:
  GroupNorm norm1_;
  Conv2d conv1_;
  Linear temb_proj_;
  GroupNorm norm2_;
  Conv2d conv2_;
  Linear skip_;
  bool has_skip_ = false;
  double dropout_;
  int layer_;

  // kDropoutStream + step * 4096 + layer + shard << 42, the step read from device memory when
  // it lives there.
  StepKey dropout_stream(const ForwardMode& m, const uint64_t* step_on_device) const {
    const uint64_t fixed = kDropoutStream + static_cast<uint64_t>(layer_) + (m.shard << 42);
    return step_on_device ? StepKey(fixed, 4096, step_on_device) : StepKey(fixed + m.step * 4096);
  }
};

class AttnBlock {
 public:
  AttnBlock(ParameterStore& s, const std::string& name, int64_t c, const UNetConfig& cfg)
      : norm_(s, name + ".norm", c, cfg.groups, cfg.norm_eps),
        // q, k and v are three C -> C layers in the reference, each initialised with
        // fan_avg = C; one packed C -> 3C layer must not average over 2C instead.
        qkv_(s, name + ".qkv", c, 3 * c, fan_avg_uniform(c, c, 1.0)),
        proj_(s, name + ".proj", c, c, /*init_scale=*/0.0),
        heads_(cfg.attention_heads) {}

  Tensor operator()(const Tensor& x) const {
    const Shape& s = x.shape();  // (N, H, W, C)
    const Tensor tokens = reshape(norm_(x), Shape{s[0], s[1] * s[2], s[3]});
    const Tensor h = proj_(attention(qkv_(tokens), heads_));
    return add(x, reshape(h, s));
  }

 private:
  GroupNorm norm_;
  Linear qkv_, proj_;
  int64_t heads_;
};

}  // namespace

// One stage of the network, in the order forward() runs them.
struct UNet::Blocks {
  Linear temb0, temb1;
  Conv2d conv_in;
  struct Level {
    std::vector<ResBlock> res;
    std::vector<std::unique_ptr<AttnBlock>> attn;  // null where the level has none
    Conv2d resample;                               // down: stride-2 conv; up: 3x3 after 2x
    bool has_resample = false;
  };
  std::vector<Level> down, up;  // up[0] is the deepest level
  std::unique_ptr<ResBlock> mid1, mid2;
  std::unique_ptr<AttnBlock> mid_attn;
  GroupNorm norm_out;
  Conv2d conv_out;
};

UNetConfig read_unet_config(ConfigReader& r, const UNetConfig& d) {
  UNetConfig c = d;
  c.image_size = r.integer("image_size", d.image_size, 4, 4096);
  c.in_channels = r.integer("in_channels", d.in_channels, 1, 64);
  c.base_channels = r.integer("base_channels", d.base_channels, 4, 4096);
  c.channel_mult = r.integers("channel_mult", d.channel_mult, 1, 64);
  c.num_res_blocks = r.integer("num_res_blocks", d.num_res_blocks, 1, 64);
  c.attention_resolutions = r.integers("attention_resolutions", d.attention_resolutions, 1, 4096);
  c.attention_heads = r.integer("attention_heads", d.attention_heads, 1, 4096);
  c.dropout = r.number("dropout", d.dropout, 0.0, 0.99);
  c.groups = r.integer("groups", d.groups, 1, 4096);
  c.upsample_by_phase = r.boolean("upsample_by_phase", d.upsample_by_phase);
  // the sinusoidal time embedding has base_channels features, half sines and half cosines
  r.require(c.base_channels % 2 == 0, "base_channels",
            std::to_string(c.base_channels) + " is odd: the time embedding's " +
                std::to_string(c.base_channels) + " features are half sines, half cosines");
  r.require(!c.channel_mult.empty(), "channel_mult", "must not be empty");
  const size_t halvings = c.channel_mult.size() - 1;
  r.require(halvings < 63 && (c.image_size >> halvings) << halvings == c.image_size, "image_size",
            std::to_string(c.image_size) + " does not halve cleanly " +
                std::to_string(halvings) + " times (one per level of channel_mult after the first)");
  for (int64_t m : c.channel_mult) {
    const int64_t ch = c.base_channels * m;
    r.require(ch % c.groups == 0, "groups",
              std::to_string(ch) + " channels (base_channels " + std::to_string(c.base_channels) +
                  " x " + std::to_string(m) + ") do not split into " + std::to_string(c.groups) +
                  " groups");
    r.require(ch % c.attention_heads == 0, "attention_heads",
              std::to_string(ch) + " channels do not split into " +
                  std::to_string(c.attention_heads) + " heads");
  }
  // A resolution no level has would silently add no attention at all.
  std::string levels;
  for (size_t i = 0; i < c.channel_mult.size(); ++i)
    levels += (i ? ", " : "") + std::to_string(c.image_size >> i);
  for (int64_t res : c.attention_resolutions) {
    bool found = false;
    for (size_t i = 0; i < c.channel_mult.size(); ++i) found |= (c.image_size >> i) == res;
    r.require(found, "attention_resolutions",
              std::to_string(res) + " is not the resolution of any level (" + levels + ")");
  }
  return c;
}

UNet::UNet(ParameterStore& s, const UNetConfig& c) : config_(c), blocks_(new Blocks) {
  Blocks& b = *blocks_;
  const int64_t ch = c.base_channels, temb = 4 * ch;
  const int levels = static_cast<int>(c.channel_mult.size());
  b.temb0 = Linear(s, "temb.dense0", ch, temb);
  b.temb1 = Linear(s, "temb.dense1", temb, temb);
  b.conv_in = Conv2d(s, "conv_in", c.in_channels, ch, 3, Conv2dParams::same(3));
  int layer = 0;
  std::vector<int64_t> skips = {ch};
  int64_t cur = ch, res = c.image_size;
  for (int l = 0; l < levels; ++l) {
    Blocks::Level lv;
    const std::string p = "down." + std::to_string(l);
    for (int i = 0; i < c.num_res_blocks; ++i) {
      const int64_t out = ch * c.channel_mult[l];
      lv.res.emplace_back(s, p + ".res" + std::to_string(i), cur, out, temb, c, layer++);
      cur = out;
      lv.attn.emplace_back(contains(c.attention_resolutions, res)
                               ? new AttnBlock(s, p + ".attn" + std::to_string(i), cur, c)
                               : nullptr);
      skips.push_back(cur);
    }
    if (l != levels - 1) {
      lv.resample = Conv2d(s, p + ".downsample", cur, cur, 3, Conv2dParams::downsample());
      lv.has_resample = true;
      skips.push_back(cur);
      res /= 2;
    }
    b.down.push_back(std::move(lv));
  }
  b.mid1.reset(new ResBlock(s, "mid.res1", cur, cur, temb, c, layer++));
  b.mid_attn.reset(new AttnBlock(s, "mid.attn", cur, c));
  b.mid2.reset(new ResBlock(s, "mid.res2", cur, cur, temb, c, layer++));
  for (int l = levels - 1; l >= 0; --l) {
    Blocks::Level lv;
    const std::string p = "up." + std::to_string(l);
    for (int i = 0; i <= c.num_res_blocks; ++i) {
      const int64_t out = ch * c.channel_mult[l];
      lv.res.emplace_back(s, p + ".res" + std::to_string(i), cur + skips.back(), out, temb, c,
                          layer++);
      skips.pop_back();
      cur = out;
      lv.attn.emplace_back(contains(c.attention_resolutions, res)
                               ? new AttnBlock(s, p + ".attn" + std::to_string(i), cur, c)
                               : nullptr);
    }
    if (l != 0) {
      lv.resample = Conv2d(s, p + ".upsample", cur, cur, 3, Conv2dParams::same(3));
      lv.has_resample = true;
      res *= 2;
    }
    b.up.push_back(std::move(lv));
  }
  b.norm_out = GroupNorm(s, "norm_out", cur, c.groups, c.norm_eps);
  b.conv_out = Conv2d(s, "conv_out", cur, c.in_channels, 3, Conv2dParams::same(3), 0.0);
}

UNet::~UNet() = default;
UNet::UNet(UNet&&) noexcept = default;

Tensor UNet::forward(const Tensor& x, const Timesteps& steps, const ForwardMode& m) const {
  const Blocks& b = *blocks_;
  CHECK(x.shape().ndim() == 4 && x.shape()[1] == config_.image_size &&
            x.shape()[2] == config_.image_size && x.shape()[3] == config_.in_channels,
        "U-Net: input " << x.describe() << " is not (N, " << config_.image_size << ", "
                        << config_.image_size << ", " << config_.in_channels << ")");
  const std::vector<int>& t = steps.host;
  CHECK(static_cast<int64_t>(t.size()) == x.shape()[0],
        "U-Net: " << t.size() << " timesteps for a batch of " << x.shape()[0]);
  CHECK(!steps.device.defined() || (steps.device.shape() == Shape{x.shape()[0]} &&
                                    steps.device.dtype() == x.dtype() &&
                                    steps.device.device() == x.device()),
        "U-Net: device timesteps " << steps.device.describe() << " for the batch "
                                   << x.describe());
  const Tensor t_tensor = steps.device.defined()
                              ? steps.device
                              : Tensor::from_vector(Shape{static_cast<int64_t>(t.size())},
                                                    std::vector<float>(t.begin(), t.end()))
                                    .to(x.dtype())
                                    .to(x.device());
  const uint64_t* const live = steps.step;  // dropout's step, when in device memory
  const Tensor temb_act =
      silu(b.temb1(silu(b.temb0(timestep_embedding(t_tensor, config_.base_channels)))));

  // Activations in the process's storage dtype (set_activation_dtype: bf16 storage), the
  // time embedding's small vectors in fp32; the output in x's dtype, so the loss reads fp32
  // and the gradient it hands back is rounded to bf16 by the cast's rule.
  const Tensor x_in = activation_dtype() == DType::BF16 ? cast(x, DType::BF16) : x;
  std::vector<Tensor> skips = {b.conv_in(x_in)};
  Tensor h = skips.back();
  for (const Blocks::Level& lv : b.down) {
    for (size_t i = 0; i < lv.res.size(); ++i) {
      h = lv.res[i](h, temb_act, m, live);
      if (lv.attn[i]) h = (*lv.attn[i])(h);
      skips.push_back(h);
    }
    if (lv.has_resample) {
      h = lv.resample(h);
      skips.push_back(h);
    }
  }
  h = (*b.mid2)((*b.mid_attn)((*b.mid1)(h, temb_act, m, live)), temb_act, m, live);
  for (const Blocks::Level& lv : b.up) {
    for (size_t i = 0; i < lv.res.size(); ++i) {
      h = lv.res[i](concat({h, skips.back()}), temb_act, m, live);
      skips.pop_back();
      if (lv.attn[i]) h = (*lv.attn[i])(h);
    }
    if (lv.has_resample)
      h = config_.upsample_by_phase ? lv.resample.of_upsampled(h)
                                    : lv.resample(upsample_nearest2x(h));
  }
  return cast(b.conv_out(b.norm_out.silu(h)), x.dtype());
}

}  // namespace ddpm
