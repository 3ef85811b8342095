#include "models/layers.h"

#include <cmath>

namespace ddpm {

Init fan_avg_uniform(int64_t fan_in, int64_t fan_out, double scale) {
  if (scale == 0.0) return Init::zeros();
  const double fan_avg = 0.5 * static_cast<double>(fan_in + fan_out);
  return Init::uniform(std::sqrt(3.0 * scale / fan_avg));
}

Linear::Linear(ParameterStore& store, const std::string& name, int64_t in, int64_t out,
               double init_scale)
    : Linear(store, name, in, out, fan_avg_uniform(in, out, init_scale)) {}

Linear::Linear(ParameterStore& store, const std::string& name, int64_t in, int64_t out,
               Init weight_init)
    : w_(store.add(name + ".w", Shape{in, out}, weight_init)),
      b_(store.add(name + ".b", Shape{out})) {}

Conv2d::Conv2d(ParameterStore& store, const std::string& name, int64_t in, int64_t out, int k,
               Conv2dParams params, double init_scale)
    : w_(store.add(name + ".w", Shape{k, k, in, out},
                   fan_avg_uniform(in * k * k, out * k * k, init_scale))),
      b_(store.add(name + ".b", Shape{out})),
      params_(params) {}

Tensor Conv2d::of_upsampled(const Tensor& x) const {
  const Conv2dParams same = Conv2dParams::same(3);
  CHECK(w_.shape()[0] == 3 && w_.shape()[1] == 3 && params_.stride == 1 &&
            params_.pad_top == same.pad_top && params_.pad_left == same.pad_left &&
            params_.pad_bottom == same.pad_bottom && params_.pad_right == same.pad_right,
        "Conv2d::of_upsampled: the layer " << w_.describe() << " is not a 3x3 'same' convolution");
  return upsample_conv3x3(x, w_, b_);
}

GroupNorm::GroupNorm(ParameterStore& store, const std::string& name, int64_t channels,
                     int64_t groups, double eps)
    : gamma_(store.add(name + ".gamma", Shape{channels}, Init::constant(1.0))),
      beta_(store.add(name + ".beta", Shape{channels})),
      groups_(groups),
      eps_(eps) {}

}  // namespace ddpm
