// The time-conditioned U-Net of the DDPM paper (Ho et al. 2020, diffusion_tf/models/unet.py),
// on NHWC tensors.
//
//   temb  = Linear(4ch) . SiLU . Linear(4ch) . sinusoidal(t, ch)
//   h     = conv_in(x)                                       3x3, ch channels
//   down  for each level (channels ch * mult[level]):
//           num_res_blocks x [ResBlock (+ Attention if the map size is in attn_resolutions)]
//           then a stride-2 3x3 conv with TF 'SAME' padding, except at the last level
//   mid   ResBlock, Attention, ResBlock
//   up    for each level, deepest first: (num_res_blocks + 1) x [ResBlock on
//           concat(h, skip) (+ Attention)], then nearest 2x + 3x3 conv, except at level 0
//   out   conv_out(SiLU(GroupNorm(h)))                       zero-initialised
// ResBlock(x): h = conv1(SiLU(GN(x))) + Linear(SiLU(temb)); h = conv2(dropout(SiLU(GN(h))));
//              return skip(x) + h, skip a 1x1 conv when channels change; conv2 zero-init.
// Attention(x): x + proj(attention(qkv(GN(x)))) over the HW tokens; proj zero-init.
// The CIFAR-10 configuration (ch 128, mult 1,2,2,2, 2 blocks, attention at 16) has
// 35,746,307 parameters, as the reference.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/config_reader.h"
#include "models/ddpm/sampler.h"
#include "models/layers.h"

namespace ddpm {

struct UNetConfig {
  int64_t image_size = 32, in_channels = 3;
  int64_t base_channels = 128;
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attention_resolutions = {16};
  int64_t attention_heads = 1;
  double dropout = 0.1;
  int64_t groups = 32;
  double norm_eps = 1e-6;
  // The upsampling convolutions by output phase (upsample_conv3x3: 4/9 of their multiply-adds,
  // no upsampled map), or as the reference writes them, upsample then convolve (false). The
  // same function and parameters either way.
  bool upsample_by_phase = true;
};

// Reads image_size, in_channels, base_channels, channel_mult, num_res_blocks,
// attention_resolutions, attention_heads, dropout, groups, upsample_by_phase. Checks that
// every GroupNorm's channels divide into `groups` and the image halves cleanly at each level.
UNetConfig read_unet_config(ConfigReader& r, const UNetConfig& defaults);

// Training-time behaviour of a forward pass: dropout is on only when train is set, with its
// mask a pure function of (seed, step, shard, layer): shard m of a sharded step
// (DiffusionTrainer::step_sharded) draws its own masks, whichever rank computes it.
// With the step's index in device memory (Timesteps::step, a training step on the GPU), the
// masks' streams are read from there (kernels/step_inputs.h): the same streams.
struct ForwardMode {
  bool train = false;
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t shard = 0;
};

class UNet {
 public:
  UNet(ParameterStore& store, const UNetConfig& config);
  ~UNet();
  UNet(UNet&&) noexcept;
  // x_t (N, H, W, C), t (N) original timesteps -> prediction (N, H, W, C).
  Tensor forward(const Tensor& x_t, const Timesteps& t, const ForwardMode& mode) const;
  const UNetConfig& config() const { return config_; }

 private:
  struct Blocks;
  UNetConfig config_;
  std::unique_ptr<Blocks> blocks_;
};

}  // namespace ddpm
