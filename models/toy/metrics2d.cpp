#include "models/toy/metrics2d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/philox.h"

namespace ddpm {

double sliced_wasserstein(const Tensor& a, const Tensor& b, int projections, uint64_t seed) {
  CHECK(a.shape() == b.shape() && a.shape().ndim() == 2 && a.shape()[1] == 2,
        "sliced_wasserstein: need two (n, 2) sets of equal size, got " << a.describe() << " and "
                                                                       << b.describe());
  const std::vector<float> av = a.to(Device::CPU).to_vector<float>(),
                           bv = b.to(Device::CPU).to_vector<float>();
  const size_t n = av.size() / 2;
  std::vector<double> pa(n), pb(n);
  double total = 0;
  for (int k = 0; k < projections; ++k) {
    const double angle = 2 * M_PI * philox_uniform(seed, 0x5D, static_cast<uint64_t>(k));
    const double cx = std::cos(angle), cy = std::sin(angle);
    for (size_t i = 0; i < n; ++i) {
      pa[i] = cx * av[2 * i] + cy * av[2 * i + 1];
      pb[i] = cx * bv[2 * i] + cy * bv[2 * i + 1];
    }
    std::sort(pa.begin(), pa.end());
    std::sort(pb.begin(), pb.end());
    double w = 0;
    for (size_t i = 0; i < n; ++i) w += std::fabs(pa[i] - pb[i]);
    total += w / static_cast<double>(n);
  }
  return total / projections;
}

}  // namespace ddpm
