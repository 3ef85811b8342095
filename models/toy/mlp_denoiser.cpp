#include "models/toy/mlp_denoiser.h"

#include <string>

namespace ddpm {

namespace {
constexpr double kInputFrequencyScale = 25.0;  // x in ~[-2, 2] -> phases over ~100 radians
}  // namespace

MlpDenoiser::MlpDenoiser(ParameterStore& store, int64_t dim, int64_t hidden, int64_t layers,
                         int64_t time_embed_dim, int64_t input_embed_dim)
    : dim_(dim), time_embed_dim_(time_embed_dim), input_embed_dim_(input_embed_dim) {
  CHECK(layers >= 1 && hidden >= 1, "MLP: layers and hidden must be >= 1");
  const int64_t features = input_embed_dim > 0 ? dim * input_embed_dim : dim;
  layers_.emplace_back(store, "mlp.in", features + time_embed_dim, hidden);
  for (int64_t i = 1; i < layers; ++i)
    layers_.emplace_back(store, "mlp.hidden" + std::to_string(i), hidden, hidden);
  layers_.emplace_back(store, "mlp.out", hidden, dim);
}

Tensor MlpDenoiser::operator()(const Tensor& x_t, const std::vector<int>& t) const {
  const std::vector<float> tf(t.begin(), t.end());
  const Tensor t_tensor =
      Tensor::from_vector(Shape{static_cast<int64_t>(t.size())}, tf).to(x_t.dtype());
  std::vector<Tensor> parts;
  if (input_embed_dim_ > 0) {
    const int64_t n = x_t.shape()[0];
    for (const Tensor& coord : split(scale(x_t, kInputFrequencyScale), std::vector<int64_t>(dim_, 1)))
      parts.push_back(timestep_embedding(reshape(coord, Shape{n}), input_embed_dim_));
  } else {
    parts.push_back(x_t);
  }
  parts.push_back(timestep_embedding(t_tensor.to(x_t.device()), time_embed_dim_));
  Tensor h = concat(parts);
  for (size_t i = 0; i + 1 < layers_.size(); ++i) h = silu(layers_[i](h));
  return layers_.back()(h);
}

}  // namespace ddpm
