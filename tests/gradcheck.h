// Central finite-difference gradient check, in double precision.
//
// `f` maps the inputs to an output tensor of any shape. The check reduces it to a scalar
// L = sum(f(x) * r) with fixed random weights r (so every output element contributes with a
// different weight, and a rule that mixes up output positions cannot pass), runs backward,
// and compares each input's gradient element by element against
//     dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h).
// With h = 1e-6 in double, the truncation error is O(h^2 |f'''|) ~ 1e-12 and the rounding
// error ~ 1e-16 |L| / h ~ 1e-9 for |L| ~ 10, so atol 1e-6 plus rtol 1e-5 has three orders of
// margin over the numerics and is still far below any real mistake in a rule (which shows
// up at the size of the gradient itself, ~1e-1).
#pragma once

#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace ddpm::test {

using TensorFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

struct GradCheckOptions {
  double h = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
};

// Inputs must be f64 CPU tensors; they are marked requires_grad here. Reports every
// mismatching element (up to a few per input) through gtest.
void expect_gradients_match(const TensorFn& f, std::vector<Tensor> inputs,
                            const GradCheckOptions& options = {});

}  // namespace ddpm::test
