// A scatter plot of samples over data, as an RGB PNG: data in grey, samples in red, on a
// square view that fits the data with a 10% margin.
#pragma once

#include <string>

#include "engine/tensor.h"

namespace ddpm {

void write_scatter_png(const std::string& path, const Tensor& data /* (n, 2) */,
                       const Tensor& samples /* (m, 2) */, int size = 512);

}  // namespace ddpm
