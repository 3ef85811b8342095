// What the network predicts, and the conversions between the three choices.
//
//   x_t = sqrt(abar) x0 + sqrt(1 - abar) eps                      (forward process)
//   v   = sqrt(abar) eps - sqrt(1 - abar) x0                      (Salimans & Ho 2022)
// so, given x_t and one prediction, the others follow:
//   from eps: x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar)
//   from x0:  eps = (x_t - sqrt(abar) x0) / sqrt(1-abar)
//   from v:   x0 = sqrt(abar) x_t - sqrt(1-abar) v,   eps = sqrt(1-abar) x_t + sqrt(abar) v
// Each is one per_sample_axpby on the engine (coefficients per sample from its timestep), so
// the same code runs on CPU and GPU and, when recording, is differentiable in x_t and the
// prediction.
#pragma once

#include <string>
#include <vector>

#include "engine/ops.h"
#include "models/ddpm/schedule.h"

namespace ddpm {

enum class Target { Epsilon, X0, V };
Target parse_target(const std::string& name);  // "epsilon" | "x0" | "v"
const char* target_name(Target target);
// The same choice as the fused loss kernels name it.
DiffusionTarget to_diffusion_target(Target target);

// sqrt(abar_t) and sqrt(1 - abar_t) for each sample of a batch.
struct NoiseLevels {
  std::vector<double> signal;  // sqrt(abar_t)
  std::vector<double> noise;   // sqrt(1 - abar_t)
  static NoiseLevels at(const Schedule& schedule, const std::vector<int>& t);
};

// out[n] = a[n] x[n] + b[n] y[n] with host coefficients.
Tensor combine(const std::vector<double>& a, const Tensor& x, const std::vector<double>& b,
               const Tensor& y);

Tensor make_x_t(const NoiseLevels& lv, const Tensor& x0, const Tensor& eps);
Tensor target_from(Target target, const NoiseLevels& lv, const Tensor& x0, const Tensor& eps);
Tensor x0_from(Target target, const NoiseLevels& lv, const Tensor& x_t, const Tensor& pred);
Tensor eps_from(Target target, const NoiseLevels& lv, const Tensor& x_t, const Tensor& pred);
// eps implied by x_t and an x0 (e.g. after clipping x0).
Tensor eps_from_x0(const NoiseLevels& lv, const Tensor& x_t, const Tensor& x0);

}  // namespace ddpm
