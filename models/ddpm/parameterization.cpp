#include "models/ddpm/parameterization.h"

namespace ddpm {

Target parse_target(const std::string& name) {
  if (name == "epsilon" || name == "eps") return Target::Epsilon;
  if (name == "x0") return Target::X0;
  if (name == "v") return Target::V;
  THROW_ERROR("unknown prediction target '" << name << "' (expected epsilon, x0 or v)");
}

const char* target_name(Target target) {
  switch (target) {
    case Target::Epsilon: return "epsilon";
    case Target::X0: return "x0";
    case Target::V: return "v";
  }
  return "?";
}

DiffusionTarget to_diffusion_target(Target target) {
  switch (target) {
    case Target::Epsilon: return DiffusionTarget::Epsilon;
    case Target::X0: return DiffusionTarget::X0;
    case Target::V: return DiffusionTarget::V;
  }
  THROW_ERROR("bad target");
}

NoiseLevels NoiseLevels::at(const Schedule& schedule, const std::vector<int>& t) {
  NoiseLevels lv;
  for (int ti : t) {
    CHECK(ti >= 0 && ti < schedule.T, "timestep " << ti << " outside [0, " << schedule.T << ")");
    lv.signal.push_back(schedule.sqrt_alpha_bar[ti]);
    lv.noise.push_back(schedule.sqrt_one_minus_alpha_bar[ti]);
  }
  return lv;
}

Tensor combine(const std::vector<double>& a, const Tensor& x, const std::vector<double>& b,
               const Tensor& y) {
  const int64_t n = static_cast<int64_t>(a.size());
  auto upload = [&](const std::vector<double>& c) {
    return Tensor::from_vector<double>(Shape{n}, c).to(x.dtype()).to(x.device());
  };
  return per_sample_axpby(upload(a), x, upload(b), y);
}

namespace {

// Elementwise maps over per-sample vectors.
std::vector<double> map2(const std::vector<double>& p, const std::vector<double>& q,
                         double (*f)(double, double)) {
  std::vector<double> r(p.size());
  for (size_t i = 0; i < p.size(); ++i) r[i] = f(p[i], q[i]);
  return r;
}

}  // namespace

Tensor make_x_t(const NoiseLevels& lv, const Tensor& x0, const Tensor& eps) {
  return combine(lv.signal, x0, lv.noise, eps);
}

Tensor target_from(Target target, const NoiseLevels& lv, const Tensor& x0, const Tensor& eps) {
  switch (target) {
    case Target::Epsilon: return eps;
    case Target::X0: return x0;
    case Target::V:
      return combine(lv.signal, eps, map2(lv.noise, lv.noise, [](double s, double) { return -s; }),
                     x0);
  }
  THROW_ERROR("bad target");
}

Tensor x0_from(Target target, const NoiseLevels& lv, const Tensor& x_t, const Tensor& pred) {
  switch (target) {
    case Target::Epsilon:
      return combine(map2(lv.signal, lv.noise, [](double s, double) { return 1.0 / s; }), x_t,
                     map2(lv.signal, lv.noise, [](double s, double n) { return -n / s; }), pred);
    case Target::X0: return pred;
    case Target::V:
      return combine(lv.signal, x_t, map2(lv.noise, lv.noise, [](double n, double) { return -n; }),
                     pred);
  }
  THROW_ERROR("bad target");
}

Tensor eps_from(Target target, const NoiseLevels& lv, const Tensor& x_t, const Tensor& pred) {
  switch (target) {
    case Target::Epsilon: return pred;
    case Target::X0: return eps_from_x0(lv, x_t, pred);
    case Target::V: return combine(lv.noise, x_t, lv.signal, pred);
  }
  THROW_ERROR("bad target");
}

Tensor eps_from_x0(const NoiseLevels& lv, const Tensor& x_t, const Tensor& x0) {
  return combine(map2(lv.signal, lv.noise, [](double, double n) { return 1.0 / n; }), x_t,
                 map2(lv.signal, lv.noise, [](double s, double n) { return -s / n; }), x0);
}

}  // namespace ddpm
