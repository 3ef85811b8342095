// kernel-bench conv, the upsamplers: the CIFAR-10 U-Net's three upsample + 3x3 convolution
// layers (4x4 -> 8x8, 8x8 -> 16x16, 16x16 -> 32x32, 256 channels each) through the engine's
// ops, as a bf16 run trains them (v4, bf16 activations): as the reference model writes them,
// upsample_nearest2x then conv2d, and by output phase (upsample_conv3x3: four 2x2
// convolutions of the small map, 4/9 of the multiply-adds, no upsampled map). The forward
// alone (what sampling runs) and the forward with the tape's backward (dx, dw, db). Rates
// count the model's FLOPs (the 3x3 convolution of the upsampled map: once forward, three
// times with the backward) for both, so they compare as the times do.
#include <cstdio>
#include <functional>
#include <string>

#include "apps/bench/bench.h"
#include "engine/autograd.h"
#include "engine/flops.h"
#include "engine/ops.h"

namespace ddpm::bench {

void bench_upsample_convolutions(const Options& o, Timer& timer, Report& report) {
  struct Layer {
    const char* name;
    int64_t h, c;  // input map h x h, c channels in and out
  };
  const Layer smoke[] = {{"smoke upsample", 4, 16}};
  const Layer cifar10[] = {{"upsample 4x4 -> 8x8", 4, 256},
                           {"upsample 8x8 -> 16x16", 8, 256},
                           {"upsample 16x16 -> 32x32", 16, 256}};
  const Precision before = precision();
  set_precision(Precision::BF16);
  using Op = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;
  const struct {
    const char* name;
    Op op;
  } ways[] = {{"upsample, then conv (v4 bf16, bf16 activations)",
               [](const Tensor& x, const Tensor& w, const Tensor& b) {
                 return conv2d(upsample_nearest2x(x), w, b, Conv2dParams::same(3));
               }},
              {"by phase (v4 bf16, bf16 activations)",
               [](const Tensor& x, const Tensor& w, const Tensor& b) {
                 return upsample_conv3x3(x, w, b);
               }}};
  for (const Layer& l : o.smoke ? std::vector<Layer>(smoke, smoke + 1)
                                : std::vector<Layer>(cifar10, cifar10 + 3)) {
    const Shape xs{o.batch, l.h, l.h, l.c}, ys{o.batch, 2 * l.h, 2 * l.h, l.c};
    Tensor x = cast(randn(xs, 1, 1, Device::CUDA), DType::BF16);
    Tensor w = scale(randn(Shape{3, 3, l.c, l.c}, 1, 2, Device::CUDA), 0.02);
    Tensor b = randn(Shape{l.c}, 1, 3, Device::CUDA);
    const Tensor dy = cast(randn(ys, 1, 4, Device::CUDA), DType::BF16);
    for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
    const double flops = static_cast<double>(
        conv2d_flops(conv2d_shape(ys, w.shape(), Conv2dParams::same(3))));
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s %lld->%lld", l.name, (long long)l.c, (long long)l.c);
    for (const auto& way : ways) {
      report.add_flops("upsample+conv fwd", shape, way.name, timer.median_ms([&] {
        NoGradGuard no_grad;
        way.op(x, w, b);
      }), flops);
      report.add_flops("upsample+conv fwd+bwd", shape, way.name, timer.median_ms([&] {
        tape().backward(way.op(x, w, b), dy);
      }), 3 * flops);
    }
  }
  set_precision(before);
}

}  // namespace ddpm::bench
