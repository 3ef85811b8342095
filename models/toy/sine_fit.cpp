#include "models/toy/sine_fit.h"

#include <cmath>
#include <vector>

#include "models/layers.h"

namespace ddpm {

SineFitResult fit_sine(int steps, uint64_t seed, int report_every,
                       const std::function<void(int, double)>& report) {
  constexpr int64_t kPoints = 256, kHidden = 64;
  constexpr double kLearningRate = 0.2;
  ParameterStore store;
  const Linear l1(store, "l1", 1, kHidden), l2(store, "l2", kHidden, kHidden),
      l3(store, "l3", kHidden, 1);
  store.finalize(Device::CPU, DType::F32, seed);

  std::vector<float> xs(kPoints), ys(kPoints);
  for (int64_t i = 0; i < kPoints; ++i) {
    xs[i] = -1.0f + 2.0f * static_cast<float>(i) / (kPoints - 1);
    ys[i] = std::sin(3.0f * xs[i]);
  }
  const Tensor x = Tensor::from_vector(Shape{kPoints, 1}, xs);
  const Tensor y = Tensor::from_vector(Shape{kPoints, 1}, ys);

  SineFitResult result;
  result.parameters = store.count();
  for (int step = 0; step <= steps; ++step) {
    store.zero_grad();
    Tensor loss = mse(l3(silu(l2(silu(l1(x))))), y);
    const double value = loss.item();
    if (step == 0) result.initial_loss = value;
    result.final_loss = value;
    if (report && (step % report_every == 0 || step == steps)) report(step, value);
    if (step == steps) {
      tape().clear();
      break;
    }
    backward(loss);
    accumulate(store.flat_data(), store.flat_grad(), -kLearningRate);  // one SGD launch
  }
  return result;
}

}  // namespace ddpm
