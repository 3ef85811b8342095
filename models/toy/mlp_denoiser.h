// The denoiser for 2-D data: an MLP on [x features, embed(t)].
//   embed(t)  = sinusoidal timestep embedding (time_embed_dim)
//   x features: x itself, or (input_embed_dim > 0) each coordinate's sinusoidal embedding
//             of 25 x (as in the "tiny-diffusion" exercises: a 2-input MLP struggles to
//             resolve thin structures; Fourier features of x fix that)
//   h         = SiLU(Linear([x features, embed(t)]))  (features + time_embed_dim -> hidden)
//   h         = SiLU(Linear(h))                      (layers - 1 times, hidden -> hidden)
//   out       = Linear(h)                            (hidden -> 2)
#pragma once

#include <vector>

#include "models/layers.h"

namespace ddpm {

class MlpDenoiser {
 public:
  MlpDenoiser(ParameterStore& store, int64_t dim, int64_t hidden, int64_t layers,
              int64_t time_embed_dim, int64_t input_embed_dim = 0);
  Tensor operator()(const Tensor& x_t, const std::vector<int>& t) const;

 private:
  int64_t dim_, time_embed_dim_, input_embed_dim_;
  std::vector<Linear> layers_;
};

}  // namespace ddpm
