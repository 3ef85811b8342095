#include "models/ddpm/losses.h"

#include <algorithm>

namespace ddpm {

LossKind parse_loss_kind(const std::string& name) {
  if (name == "simple") return LossKind::Simple;
  if (name == "vlb") return LossKind::Vlb;
  if (name == "hybrid") return LossKind::Hybrid;
  THROW_ERROR("unknown loss '" << name << "' (expected simple, vlb or hybrid)");
}

const char* loss_kind_name(LossKind kind) {
  switch (kind) {
    case LossKind::Simple: return "simple";
    case LossKind::Vlb: return "vlb";
    case LossKind::Hybrid: return "hybrid";
  }
  return "?";
}

std::vector<double> loss_weights(const Schedule& s, Target target, const LossConfig& c) {
  std::vector<double> w(s.T, 1.0);
  if (c.kind == LossKind::Simple) return w;
  const std::vector<double> w_eps = s.vlb_weights(c.vlb_fixed_large, 0.0);
  for (int t = 0; t < s.T; ++t) {
    const double sigma2 = c.vlb_fixed_large ? s.beta[t] : s.posterior_variance[t];
    const double coef1_sq = s.posterior_coef1[t] * s.posterior_coef1[t];
    double v = 0;
    switch (target) {
      case Target::Epsilon: v = w_eps[t]; break;
      case Target::X0: v = coef1_sq / (2.0 * sigma2); break;
      case Target::V: v = coef1_sq * (1.0 - s.alpha_bar[t]) / (2.0 * sigma2); break;
    }
    if (c.vlb_clamp > 0) v = std::min(v, c.vlb_clamp);
    w[t] = c.kind == LossKind::Vlb ? v : 1.0 + c.hybrid_lambda * v;
  }
  return w;
}

LossResult diffusion_loss(const Tensor& prediction, const Tensor& target,
                          const std::vector<int>& t, const std::vector<double>& weights,
                          const std::vector<double>& importance) {
  const int64_t n = prediction.shape()[0];
  CHECK(static_cast<int64_t>(t.size()) == n,
        "diffusion_loss: " << t.size() << " timesteps for a batch of " << n);
  CHECK(importance.empty() || static_cast<int64_t>(importance.size()) == n,
        "diffusion_loss: " << importance.size() << " importance weights for a batch of " << n);
  Tensor mse = mse_per_sample(prediction, target);  // (N)
  const std::vector<double> mse_host = mse.to(Device::CPU).to(DType::F64).to_vector<double>();
  LossResult r;
  std::vector<double> batch_weight(n);
  for (int64_t i = 0; i < n; ++i) {
    const double w = weights.at(t[i]);
    r.per_sample.push_back(w * mse_host[i]);
    batch_weight[i] = w * (importance.empty() ? 1.0 : importance[i]) / static_cast<double>(n);
  }
  const Tensor wt =
      Tensor::from_vector<double>(Shape{n}, batch_weight).to(mse.dtype()).to(mse.device());
  r.loss = sum(mul(mse, wt));
  return r;
}

}  // namespace ddpm
