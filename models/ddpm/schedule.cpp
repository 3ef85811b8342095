#include "models/ddpm/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/check.h"

namespace ddpm {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  THROW_ERROR("unknown schedule '" << name << "' (expected linear or cosine)");
}

const char* schedule_kind_name(ScheduleKind kind) {
  return kind == ScheduleKind::Linear ? "linear" : "cosine";
}

namespace {

// Every derived table from the betas.
Schedule from_betas(const std::vector<double>& beta) {
  Schedule s;
  s.T = static_cast<int>(beta.size());
  s.beta = beta;
  double prod = 1.0;
  for (int t = 0; t < s.T; ++t) {
    const double b = beta[t], a = 1.0 - b;
    const double prev = prod;
    prod *= a;
    s.alpha.push_back(a);
    s.alpha_bar.push_back(prod);
    s.alpha_bar_prev.push_back(prev);
    s.sqrt_alpha_bar.push_back(std::sqrt(prod));
    s.sqrt_one_minus_alpha_bar.push_back(std::sqrt(1.0 - prod));
    s.posterior_variance.push_back(b * (1.0 - prev) / (1.0 - prod));
    s.posterior_coef1.push_back(std::sqrt(prev) * b / (1.0 - prod));
    s.posterior_coef2.push_back(std::sqrt(a) * (1.0 - prev) / (1.0 - prod));
    s.snr.push_back(prod / (1.0 - prod));
    s.log_snr.push_back(std::log(prod) - std::log1p(-prod));
  }
  s.vlb_weight = s.vlb_weights(/*fixed_large=*/true, /*clamp=*/0.0);
  return s;
}

}  // namespace

std::vector<double> Schedule::vlb_weights(bool fixed_large, double clamp) const {
  std::vector<double> w(T);
  for (int t = 0; t < T; ++t) {
    const double sigma2 = fixed_large ? beta[t] : posterior_variance[t];
    const double v = sigma2 > 0 ? beta[t] * beta[t] / (2.0 * sigma2 * alpha[t] * (1.0 - alpha_bar[t]))
                                : std::numeric_limits<double>::infinity();
    w[t] = clamp > 0 ? std::min(v, clamp) : v;
  }
  return w;
}

std::vector<float> Schedule::to_float(const std::vector<double>& table) {
  return std::vector<float>(table.begin(), table.end());
}

Schedule make_schedule(const ScheduleConfig& c) {
  CHECK(c.T >= 2, "schedule: T must be >= 2, got " << c.T);
  std::vector<double> beta(c.T);
  if (c.kind == ScheduleKind::Linear) {
    CHECK(c.beta_start > 0 && c.beta_start <= c.beta_end && c.beta_end < 1,
          "schedule: need 0 < beta_start <= beta_end < 1, got " << c.beta_start << ", "
                                                                << c.beta_end);
    for (int t = 0; t < c.T; ++t)
      beta[t] = c.beta_start + (c.beta_end - c.beta_start) * t / (c.T - 1);
  } else {
    CHECK(c.cosine_s > 0 && c.max_beta > 0 && c.max_beta < 1,
          "schedule: cosine needs s > 0 and 0 < max_beta < 1");
    auto f = [&](double s) {
      const double v = std::cos((s / c.T + c.cosine_s) / (1.0 + c.cosine_s) * M_PI / 2);
      return v * v;
    };
    for (int t = 0; t < c.T; ++t)
      beta[t] = std::min(1.0 - f(t + 1.0) / f(t), c.max_beta);
  }
  return from_betas(beta);
}

Schedule respace(const Schedule& base, const std::vector<int>& timesteps) {
  CHECK(!timesteps.empty(), "respace: no timesteps");
  std::vector<double> beta;
  double prev = 1.0;
  int last = -1;
  for (int t : timesteps) {
    CHECK(t > last && t < base.T, "respace: timesteps must increase within [0, " << base.T
                                                                                 << "), got " << t);
    beta.push_back(1.0 - base.alpha_bar[t] / prev);
    prev = base.alpha_bar[t];
    last = t;
  }
  return from_betas(beta);
}

std::string schedule_table(const Schedule& s, bool json) {
  const char* names[] = {"t", "beta", "alpha_bar", "alpha_bar_prev", "posterior_variance",
                         "snr", "log_snr", "vlb_weight"};
  const std::vector<double>* columns[] = {&s.beta, &s.alpha_bar, &s.alpha_bar_prev,
                                          &s.posterior_variance, &s.snr, &s.log_snr,
                                          &s.vlb_weight};
  if (json) {
    nlohmann::json rows = nlohmann::json::array();
    for (int t = 0; t < s.T; ++t) {
      nlohmann::json row = {{"t", t}};
      for (int k = 0; k < 7; ++k) row[names[k + 1]] = (*columns[k])[t];
      rows.push_back(row);
    }
    return rows.dump(1) + "\n";
  }
  std::ostringstream os;
  os.precision(17);
  for (int k = 0; k < 8; ++k) os << (k ? "," : "") << names[k];
  os << "\n";
  for (int t = 0; t < s.T; ++t) {
    os << t;
    for (int k = 0; k < 7; ++k) os << "," << (*columns[k])[t];
    os << "\n";
  }
  return os.str();
}

std::vector<int> even_timesteps(int T, int K) {
  CHECK(K >= 1 && K <= T, "sampling steps must be in [1, " << T << "], got " << K);
  if (K == 1) return {T - 1};
  std::vector<int> ts;
  for (int i = 0; i < K; ++i)
    ts.push_back(static_cast<int>(std::lround(static_cast<double>(i) * (T - 1) / (K - 1))));
  return ts;
}

}  // namespace ddpm
