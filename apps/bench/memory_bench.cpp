// kernel-bench memory: the memory-bound kernels of the CIFAR-10 model's step (group norm,
// SiLU, the per-sample broadcast add, upsampling, the skip concatenation, the upsampler's
// phase interleaving) in GB/s of the bytes they must move; group norm in each of its
// mappings onto blocks, with f32 and with bf16 storage, and the GN + SiLU backward as two
// kernels and as one.
#include <cstdio>
#include <string>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/resample.cuh"

namespace ddpm::bench {

void bench_memory_bound(const Options& o, Timer& timer, Report& report) {
  const int64_t batch = o.batch;
  auto add_bytes = [&](const std::string& k, const std::string& shape, const std::string& v,
                       double ms, double bytes) { report.add_bytes(k, shape, v, ms, bytes); };
  // Memory-bound kernels: group norm (read x, write y: 8 bytes/element forward; backward
  // reads x, dy, writes dx: 12), SiLU (8 forward), upsample (4 in + 16 out per input value).
  const struct {
    int64_t h, c;
  } maps[] = {{32, 128}, {16, 256}, {8, 256}, {32, 384}};
  for (const auto& m : maps) {
    const int64_t n = batch * m.h * m.h * m.c;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)m.h, (long long)m.h, (long long)m.c);
    // an NVTX range per map, "memory 32x32x128", which gpu-check's profile stage selects
    const ProfileRange map_range(("memory " + std::string(shape)).c_str());
    const Tensor x = randn(Shape{batch, m.h, m.h, m.c}, 1, 3, Device::CUDA);
    const Tensor y = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
    const Tensor g = Tensor::full(Shape{m.c}, 1.0, DType::F32, Device::CUDA);
    const Tensor mean = Tensor::empty(Shape{batch, 32}, DType::F32, Device::CUDA);
    const Tensor rstd = Tensor::empty(Shape{batch, 32}, DType::F32, Device::CUDA);
    GroupNormShape gs;
    gs.n = batch;
    gs.s = m.h * m.h;
    gs.c = m.c;
    const Tensor xb = Tensor::zeros(x.shape(), DType::BF16, Device::CUDA);
    const Tensor yb = Tensor::zeros(x.shape(), DType::BF16, Device::CUDA);
    const auto* xb_bits = static_cast<const uint16_t*>(xb.raw());
    auto* yb_bits = static_cast<uint16_t*>(yb.raw());
    // Every mapping of the kernels onto blocks (kernels/cuda/group_norm.cu): v1 a block per
    // (sample, group), v2 a block per channel slab, a thread per channel, v3 the slab a
    // thread per run of 8 channels, in 16-byte words, v4 v3's slab kept in registers, every
    // element read once (the default takes v4 where it has a plan, else v3 or v2 by shape).
    const struct {
      cuda::GroupNormMapping mapping;
      const char *f32, *bf16;  // the rows' variant names
    } mappings[] = {
        {cuda::GroupNormMapping::BlockPerGroup, "block per group", "block per group, bf16 storage"},
        {cuda::GroupNormMapping::ChannelSlab, "channel slab", "channel slab, bf16 storage"},
        {cuda::GroupNormMapping::ChannelRuns, "channel runs", "channel runs, bf16 storage"},
        {cuda::GroupNormMapping::SlabInRegisters, "slab in registers",
         "slab in registers, bf16 storage"}};
    const cuda::GroupNormMapping chosen = cuda::group_norm_mapping();
    for (const auto& mp : mappings) {
      cuda::set_group_norm_mapping(mp.mapping);
      add_bytes("group_norm fwd", shape, mp.f32, timer.median_ms([&] {
        cuda::group_norm_forward(gs, x.data<float>(), g.data<float>(), g.data<float>(),
                                 y.data<float>(), mean.data<float>(), rstd.data<float>());
      }), 8.0 * n);
      add_bytes("group_norm bwd (dx)", shape, mp.f32, timer.median_ms([&] {
        cuda::group_norm_backward(gs, x.data<float>(), g.data<float>(), mean.data<float>(),
                                  rstd.data<float>(), y.data<float>(), y.data<float>(), nullptr,
                                  nullptr);
      }), 12.0 * n);
      // GN + SiLU fused, as the U-Net runs it; then with bf16 storage (fp32 statistics and
      // math): half the bytes, so at the same fraction of bandwidth half the time.
      add_bytes("group_norm+silu fwd", shape, mp.f32, timer.median_ms([&] {
        cuda::group_norm_silu_forward(gs, x.data<float>(), g.data<float>(), g.data<float>(),
                                      y.data<float>(), mean.data<float>(), rstd.data<float>());
      }), 8.0 * n);
      add_bytes("group_norm+silu fwd", shape, mp.bf16, timer.median_ms([&] {
        cuda::group_norm_forward_bf16(gs, xb_bits, g.data<float>(), g.data<float>(), yb_bits,
                                      mean.data<float>(), rstd.data<float>(), true);
      }), 4.0 * n);
      add_bytes("group_norm bwd (dx)", shape, mp.bf16, timer.median_ms([&] {
        cuda::group_norm_backward_bf16(gs, xb_bits, g.data<float>(), mean.data<float>(),
                                       rstd.data<float>(), xb_bits, yb_bits, nullptr, nullptr);
      }), 6.0 * n);
    }
    cuda::set_group_norm_mapping(chosen);
    // The GN + SiLU backward without dropout in bf16 storage, dx written outright and dgamma,
    // dbeta summed (as the U-Net's first GN + SiLU of a ResBlock runs it), under the default
    // mapping (v4 where it has a plan): the two kernels (dh, then dx) against the one that
    // recomputes dh. GB/s of the least bytes each must move: the two kernels x, dy read and
    // dh written, then x, dh read and dx written (12 bytes an element); the one x, dy read
    // and dx written (6). v3 moves 16 and 10 (it reads x and dh, or x and dy, twice).
    if (cuda::group_norm_silu_backward_fuses(gs, 0.0f)) {
      const Tensor dh = Tensor::zeros(x.shape(), DType::BF16, Device::CUDA);
      const Tensor ws = Tensor::zeros(Shape{cuda::group_norm_backward_workspace(gs)}, DType::F32,
                                      Device::CUDA);
      const Tensor dgb = Tensor::zeros(Shape{2, m.c}, DType::F32, Device::CUDA);
      auto* dh_bits = static_cast<uint16_t*>(dh.raw());
      float* dg = dgb.data<float>();
      cuda::group_norm_forward_bf16(gs, xb_bits, g.data<float>(), g.data<float>(), yb_bits,
                                    mean.data<float>(), rstd.data<float>(), true);
      add_bytes("group_norm+silu bwd", shape, "dh pass, then dx pass, bf16 storage",
                timer.median_ms([&] {
                  cuda::group_norm_silu_dh_bf16(gs, xb_bits, g.data<float>(), g.data<float>(),
                                                mean.data<float>(), rstd.data<float>(), xb_bits,
                                                dh_bits);
                  cuda::group_norm_backward_bf16(gs, xb_bits, g.data<float>(), mean.data<float>(),
                                                 rstd.data<float>(), dh_bits, yb_bits, dg,
                                                 dg + m.c, ws.data<float>(), GradWrite::Assign);
                }), 12.0 * n);
      add_bytes("group_norm+silu bwd", shape, "fused (dh recomputed), bf16 storage",
                timer.median_ms([&] {
                  cuda::group_norm_silu_backward_bf16(gs, xb_bits, g.data<float>(),
                                                      g.data<float>(), mean.data<float>(),
                                                      rstd.data<float>(), xb_bits, yb_bits, dg,
                                                      dg + m.c, ws.data<float>(),
                                                      GradWrite::Assign);
                }), 6.0 * n);
      // The ResBlock's second GN + SiLU, with dropout after it: dh written in a pass of its
      // own (its mask drawn there) then the dx pass, against v4's one kernel, which
      // regenerates the mask as it reads dy (x, dy read once, dx written: 6 bytes an element).
      const cuda::DropoutSpec drop{0.1f, 5, 9};
      if (cuda::group_norm_silu_backward_fuses(gs, drop.p, true, {xb_bits, yb_bits})) {
        add_bytes("group_norm+silu+dropout bwd", shape, "dh pass, then dx pass, bf16 storage",
                  timer.median_ms([&] {
                    cuda::group_norm_silu_dh_bf16(gs, xb_bits, g.data<float>(), g.data<float>(),
                                                  mean.data<float>(), rstd.data<float>(),
                                                  xb_bits, dh_bits, drop);
                    cuda::group_norm_backward_bf16(gs, xb_bits, g.data<float>(),
                                                   mean.data<float>(), rstd.data<float>(),
                                                   dh_bits, yb_bits, dg, dg + m.c,
                                                   ws.data<float>(), GradWrite::Assign);
                  }), 12.0 * n);
        add_bytes("group_norm+silu+dropout bwd", shape, "fused (mask regenerated), bf16 storage",
                  timer.median_ms([&] {
                    cuda::group_norm_silu_backward_bf16(gs, xb_bits, g.data<float>(),
                                                        g.data<float>(), mean.data<float>(),
                                                        rstd.data<float>(), xb_bits, yb_bits,
                                                        dg, dg + m.c, ws.data<float>(),
                                                        GradWrite::Assign, drop);
                  }), 6.0 * n);
      }
    }
    add_bytes("silu fwd", shape, "grid-stride", timer.median_ms([&] {
      cuda::silu_forward(n, x.data<float>(), y.data<float>());
    }), 8.0 * n);
    // a ResBlock's time embedding on the fp32 path (v1-v3; v4 adds it in its epilogue)
    const Tensor temb = randn(Shape{batch, m.c}, 1, 5, Device::CUDA);
    add_bytes("broadcast add (per sample)", shape, "float4 words", timer.median_ms([&] {
      cuda::broadcast_add_forward(BroadcastShape{batch, m.h * m.h, m.c, true}, x.data<float>(),
                                  temb.data<float>(), y.data<float>());
    }), 8.0 * n);
  }
  {
    const Tensor x = randn(Shape{batch, 16, 16, 256}, 1, 4, Device::CUDA);
    const Tensor y = Tensor::empty(Shape{batch, 32, 32, 256}, DType::F32, Device::CUDA);
    add_bytes("upsample 2x fwd", "16x16x256", "thread per input, 2x2 block",
              timer.median_ms([&] {
                cuda::upsample_nearest2x_forward(UpsampleShape{batch, 16, 16, 256},
                                                 x.data<float>(), y.data<float>());
              }), 20.0 * x.numel());
  }
  {
    // A decoder's skip concatenation, 256 + 128 -> 384 channels at 32x32: two slice copies
    // (read once, written once), which move 16-byte words (kernels/cuda/resample.cu).
    const int64_t rows = batch * 32 * 32;
    for (const DType t : {DType::F32, DType::BF16}) {
      const Tensor a = Tensor::zeros(Shape{rows, 256}, t, Device::CUDA);
      const Tensor b = Tensor::zeros(Shape{rows, 128}, t, Device::CUDA);
      const Tensor y = Tensor::zeros(Shape{rows, 384}, t, Device::CUDA);
      const double bytes = 2.0 * static_cast<double>(y.nbytes());
      add_bytes("concat (skip)", "32x32x(256+128)",
                t == DType::F32 ? "16-byte words" : "16-byte words, bf16 storage",
                timer.median_ms([&] {
                  if (t == DType::F32) {
                    cuda::slice_copy({rows, 256, 256, 384}, a.data<float>(), y.data<float>());
                    cuda::slice_copy({rows, 128, 128, 384}, b.data<float>(),
                                     y.data<float>() + 256);
                  } else {
                    const auto bits = [](const Tensor& v) {
                      return static_cast<uint16_t*>(v.raw());
                    };
                    cuda::slice_copy({rows, 256, 256, 384}, bits(a), bits(y));
                    cuda::slice_copy({rows, 128, 128, 384}, bits(b), bits(y) + 256);
                  }
                }), bytes);
    }
  }
  {
    // The upsampler by phase (upsample_conv3x3): its four 16x16x256 phase outputs interleaved
    // into the 32x32x256 map, in bf16 as a bf16 run stores them (16-byte words): y read
    // once in four parts and written once.
    const UpsampleShape s{batch, 16, 16, 256};
    std::vector<Tensor> phases;
    for (int p = 0; p < 4; ++p)
      phases.push_back(Tensor::zeros(Shape{batch, 16, 16, 256}, DType::BF16, Device::CUDA));
    const Tensor y = Tensor::empty(Shape{batch, 32, 32, 256}, DType::BF16, Device::CUDA);
    const uint16_t* const from[4] = {bf16_bits(phases[0]), bf16_bits(phases[1]),
                                     bf16_bits(phases[2]), bf16_bits(phases[3])};
    add_bytes("interleave phases", "4 x 16x16x256", "16-byte words, bf16 storage",
              timer.median_ms([&] { cuda::interleave_phases_forward(s, from, bf16_bits(y)); }),
              2.0 * static_cast<double>(y.nbytes()));
  }
}

}  // namespace ddpm::bench
