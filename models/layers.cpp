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

GroupNorm::GroupNorm(ParameterStore& store, const std::string& name, int64_t channels,
                     int64_t groups, double eps)
    : gamma_(store.add(name + ".gamma", Shape{channels}, Init::constant(1.0))),
      beta_(store.add(name + ".beta", Shape{channels})),
      groups_(groups),
      eps_(eps) {}

}  // namespace ddpm
