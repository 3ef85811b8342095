#include "tests/gradcheck.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "tests/test_util.h"

namespace ddpm::test {

namespace {

double weighted_sum(const Tensor& y, const std::vector<double>& r) {
  const double* yv = y.data<double>();
  double s = 0;
  for (size_t i = 0; i < r.size(); ++i) s += yv[i] * r[i];
  return s;
}

}  // namespace

void expect_gradients_match(const TensorFn& f, std::vector<Tensor> inputs,
                            const GradCheckOptions& options) {
  for (Tensor& x : inputs) {
    ASSERT_EQ(x.dtype(), DType::F64) << "gradient checks run in double";
    x.set_requires_grad(true);
    x.zero_grad();
  }
  // Analytic: L = sum(f(x) * r).
  Tensor y = f(inputs);
  const Tensor r = random_tensor(y.shape(), /*stream=*/999);
  backward(sum(mul(y, r)));
  const std::vector<double> rv = values(r);

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    ASSERT_TRUE(x.grad().defined()) << "input " << k << " received no gradient";
    expect_finite_nonzero(x.grad(), "analytic gradient");
    const std::vector<double> analytic = values(x.grad());
    double* xv = x.data<double>();
    int reported = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = xv[i];
      double lp, lm;
      {
        NoGradGuard no_grad;
        xv[i] = saved + options.h;
        lp = weighted_sum(f(inputs), rv);
        xv[i] = saved - options.h;
        lm = weighted_sum(f(inputs), rv);
      }
      xv[i] = saved;
      const double numeric = (lp - lm) / (2 * options.h);
      const double tol = options.atol + options.rtol * std::fabs(numeric);
      if (std::fabs(analytic[i] - numeric) > tol && reported < 5) {
        ++reported;
        ADD_FAILURE() << "input " << k << " element " << i << ": analytic " << analytic[i]
                      << " vs finite difference " << numeric << " (tolerance " << tol << ")";
      }
    }
  }
}

}  // namespace ddpm::test
