// Built-in 2-D datasets, generated procedurally from Philox (seed, stream), scaled so each
// has roughly unit spread:
//   moons       two interleaved half circles (as sklearn's make_moons), noise sd 0.05
//   8gaussians  eight tight clusters (sd 0.1) on a circle of radius 2, /1.414
//   swissroll   the 2-D swiss roll (t cos t, t sin t), t in [1.5 pi, 4.5 pi], /5, noise 0.05
#pragma once

#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace ddpm {

// (n, 2) f32 points. Errors name an unknown dataset.
Tensor make_2d_dataset(const std::string& name, int64_t n, uint64_t seed, uint64_t stream);

}  // namespace ddpm
