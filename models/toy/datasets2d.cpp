#include "models/toy/datasets2d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/philox.h"

namespace ddpm {

Tensor make_2d_dataset(const std::string& name, int64_t n, uint64_t seed, uint64_t stream) {
  CHECK(n >= 1, "2-D dataset: n must be >= 1, got " << n);
  // Per point i: uniforms u0, u1 (words 0-1 of block i) and normals z0, z1 (a second stream).
  auto u = [&](int64_t i, int k) { return philox_uniform(seed, stream, 4 * i + k); };
  auto z = [&](int64_t i, int k) { return philox_normal(seed, stream + 1, 4 * i + k); };
  std::vector<float> p(static_cast<size_t>(2 * n));
  for (int64_t i = 0; i < n; ++i) {
    double x = 0, y = 0;
    if (name == "moons") {
      const double theta = M_PI * u(i, 0);
      if (u(i, 1) < 0.5) {
        x = std::cos(theta);
        y = std::sin(theta);
      } else {
        x = 1 - std::cos(theta);
        y = 0.5 - std::sin(theta);
      }
      x = (x - 0.5) / 0.85 + 0.05 * z(i, 0);  // centred, same scale on both axes
      y = (y - 0.25) / 0.85 + 0.05 * z(i, 1);
    } else if (name == "8gaussians") {
      const int k = std::min(7, static_cast<int>(u(i, 0) * 8));
      x = (2 * std::cos(k * M_PI / 4) + 0.1 * z(i, 0)) / 1.414;
      y = (2 * std::sin(k * M_PI / 4) + 0.1 * z(i, 1)) / 1.414;
    } else if (name == "swissroll") {
      const double t = 1.5 * M_PI * (1 + 2 * u(i, 0));
      x = t * std::cos(t) / 5 + 0.05 * z(i, 0);
      y = t * std::sin(t) / 5 + 0.05 * z(i, 1);
    } else {
      THROW_ERROR("unknown 2-D dataset '" << name << "' (expected moons, 8gaussians or swissroll)");
    }
    p[2 * i] = static_cast<float>(x);
    p[2 * i + 1] = static_cast<float>(y);
  }
  return Tensor::from_vector(Shape{n, 2}, p);
}

}  // namespace ddpm
