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

// The backward of f again, now adding to a gradient already there: L' = sum(f(x) * r) +
// earlier_gradient_terms(x) (test_util.h), whose backward runs first, so f's backward
// accumulates (GradWrite::Accumulate) where the first pass wrote the gradient outright.
// Expect the first pass's gradient plus c_k, to double rounding.
void expect_added_to_an_earlier_gradient(const TensorFn& f, std::vector<Tensor>& inputs,
                                         const Tensor& r,
                                         const std::vector<std::vector<double>>& analytics) {
  for (Tensor& x : inputs) x.zero_grad();
  const Tensor loss = sum(mul(f(inputs), r));  // f's ops first
  std::vector<Tensor> cs;
  backward(add(loss, earlier_gradient_terms(inputs, DType::F64, &cs)));
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::vector<double> got = values(inputs[k].grad()), earlier = values(cs[k]);
    int reported = 0;
    for (size_t i = 0; i < got.size() && reported < 5; ++i) {
      const double want = analytics[k][i] + earlier[i];
      const double tol = 1e-12 * (1 + std::fabs(analytics[k][i]) + std::fabs(earlier[i]));
      if (std::fabs(got[i] - want) > tol) {
        ++reported;
        ADD_FAILURE() << "input " << k << " element " << i << ": added to an earlier gradient "
                      << earlier[i] << ", the gradient is " << got[i] << ", not "
                      << want << " (the first pass's " << analytics[k][i] << " plus it)";
      }
    }
  }
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
  std::vector<std::vector<double>> analytics;
  for (size_t k = 0; k < inputs.size(); ++k) {
    ASSERT_TRUE(inputs[k].grad().defined()) << "input " << k << " received no gradient";
    expect_finite_nonzero(inputs[k].grad(), "analytic gradient");
    analytics.push_back(values(inputs[k].grad()));
  }
  expect_added_to_an_earlier_gradient(f, inputs, r, analytics);

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    const std::vector<double>& analytic = analytics[k];
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
