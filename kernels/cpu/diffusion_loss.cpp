#include "kernels/cpu/diffusion_loss.h"

#include <vector>

#include "kernels/diffusion_loss_math.h"

namespace ddpm::cpu {

using namespace diffusion;

template <class T, class X0>
void diffusion_corrupt(const DiffusionLossShape& keyed, const DiffusionLossTables<T>& tab,
                       const X0* x0, T* x_t) {
  const DiffusionLossShape s = read_step_keys(keyed);  // host keys only (engine/ops checks)
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < s.n; ++j) {
    const int t = tab.t[j];
    const T a = tab.sqrt_abar[t], b = tab.sqrt_one_minus_abar[t];
    const bool mirror = mirrored(s, j);
    for (int64_t i = 0; i < s.dim; ++i) {
      const uint64_t g = static_cast<uint64_t>(j * s.dim + i);
      const T eps = static_cast<T>(philox_normal(s.noise_seed, s.noise_stream.base, g));
      x_t[j * s.dim + i] = corrupt_value(a, b, x0_value<T>(s, x0, j, i, mirror), eps);
    }
  }
}

template <class T, class X0>
void diffusion_loss(const DiffusionLossShape& keyed, const DiffusionLossTables<T>& tab,
                    const T* pred, const X0* x0, T* dpred, T* per_sample, T* loss) {
  const DiffusionLossShape s = read_step_keys(keyed);
  std::vector<double> mse(static_cast<size_t>(s.n)), batch_weight(static_cast<size_t>(s.n));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < s.n; ++j) {
    const int t = tab.t[j];
    const T a = tab.sqrt_abar[t], b = tab.sqrt_one_minus_abar[t];
    const T w = tab.weight[t] * (tab.importance ? tab.importance[j] : T(1)) / static_cast<T>(s.n);
    const T scale = grad_scale(w, s.dim);
    const bool mirror = mirrored(s, j);
    double sq = 0;
    for (int64_t i = 0; i < s.dim; ++i) {
      const uint64_t g = static_cast<uint64_t>(j * s.dim + i);
      const T eps = static_cast<T>(philox_normal(s.noise_seed, s.noise_stream.base, g));
      const T x = s.target == DiffusionTarget::Epsilon ? T(0) : x0_value<T>(s, x0, j, i, mirror);
      const T diff = pred[j * s.dim + i] - target_value(s.target, a, b, x, eps);
      dpred[j * s.dim + i] = scale * diff;
      sq += static_cast<double>(diff) * static_cast<double>(diff);
    }
    mse[j] = sq / static_cast<double>(s.dim);
    batch_weight[j] = static_cast<double>(w);
    per_sample[j] = static_cast<T>(static_cast<double>(tab.weight[t]) * mse[j]);
  }
  double total = 0;
  for (int64_t j = 0; j < s.n; ++j) total += batch_weight[j] * mse[j];
  *loss = static_cast<T>(total);
}

#define INSTANTIATE(T, X0)                                                                   \
  template void diffusion_corrupt<T, X0>(const DiffusionLossShape&,                          \
                                         const DiffusionLossTables<T>&, const X0*, T*);      \
  template void diffusion_loss<T, X0>(const DiffusionLossShape&, const DiffusionLossTables<T>&, \
                                      const T*, const X0*, T*, T*, T*);
INSTANTIATE(float, float)
INSTANTIATE(float, uint8_t)
INSTANTIATE(double, double)
INSTANTIATE(double, uint8_t)

}  // namespace ddpm::cpu
