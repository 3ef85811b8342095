// Sample quality for 2-D data: the sliced Wasserstein-1 distance between two point sets of
// equal size, the mean over `projections` random unit directions of the 1-D W1 distance
// between the projected sets (sort both, average |a_i - b_i|). 0 for identical sets; about
// the data's spread for unrelated ones. Directions are Philox draws from `seed`.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace ddpm {

double sliced_wasserstein(const Tensor& a /* (n, 2) */, const Tensor& b /* (n, 2) */,
                          int projections = 256, uint64_t seed = 0);

}  // namespace ddpm
