// Noise schedules and every table the DDPM recipe reads from them.
//
// Index t is 0-based: t = 0 is the first noising step, t = T-1 the last. All tables are
// computed in double and stored as float (the GPU reads float), with the double values kept
// for tests and printing.
//
//   linear:  beta_t = beta_start + (beta_end - beta_start) t / (T-1)         (Ho et al. 2020)
//   cosine:  f(s) = cos^2(((s/T) + 0.008) / 1.008 * pi/2),  abar(s) = f(s)/f(0)
//            beta_t = min(1 - abar(t+1)/abar(t), 0.999)                        (Nichol & Dhariwal)
//            and alpha_bar is the cumulative product of the CAPPED betas (so the last
//            alpha_bar is ~2.4e-9, not 0).
//
// Derived tables, for q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I) and the posterior
// q(x_{t-1} | x_t, x_0) = N(coef1 x0 + coef2 x_t, beta_tilde_t I):
//   alpha_t = 1 - beta_t,  abar_t = prod_{s<=t} alpha_s,  abar_prev_t = abar_{t-1} (1 at t=0)
//   beta_tilde_t = beta_t (1 - abar_prev_t) / (1 - abar_t)          (posterior variance)
//   coef1_t = sqrt(abar_prev_t) beta_t / (1 - abar_t),  coef2_t = sqrt(alpha_t) (1 - abar_prev_t) / (1 - abar_t)
//   snr_t = abar_t / (1 - abar_t),  log_snr_t = log(snr_t)
//   vlb_weight_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) with sigma_t^2 = beta_t
//     (the weight that turns ||eps - eps_hat||^2 into the KL term L_{t-1} of the bound,
//      per dimension, for the fixed-large variance; see models/ddpm/losses.h)
#pragma once

#include <string>
#include <vector>

namespace ddpm {

enum class ScheduleKind { Linear, Cosine };
ScheduleKind parse_schedule_kind(const std::string& name);  // "linear" | "cosine"
const char* schedule_kind_name(ScheduleKind kind);

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::Linear;
  int T = 1000;
  double beta_start = 1e-4, beta_end = 0.02;  // linear only
  double cosine_s = 0.008, max_beta = 0.999;  // cosine only
};

struct Schedule {
  int T = 0;
  // double-precision tables (length T)
  std::vector<double> beta, alpha, alpha_bar, alpha_bar_prev, sqrt_alpha_bar,
      sqrt_one_minus_alpha_bar, posterior_variance, posterior_coef1, posterior_coef2, snr,
      log_snr, vlb_weight;

  // The vlb weight for a chosen sigma_t^2 (fixed_large: beta; fixed_small: beta_tilde),
  // optionally clamped from above (clamp <= 0: none). Infinite where sigma_t^2 = 0.
  std::vector<double> vlb_weights(bool fixed_large, double clamp) const;

  // A float copy of a table, as the kernels and the GPU read it.
  static std::vector<float> to_float(const std::vector<double>& table);
};

Schedule make_schedule(const ScheduleConfig& config);

// A schedule on a subsequence of timesteps (improved DDPM's respacing, which DDPM sampling
// with fewer steps and DDIM both use): keeps alpha_bar at `timesteps` (increasing, within
// [0, T)) and recomputes beta_i = 1 - abar[tau_i] / abar[tau_{i-1}].
Schedule respace(const Schedule& base, const std::vector<int>& timesteps);

// The table a user plots: one row per t with t, beta, alpha_bar, alpha_bar_prev,
// posterior_variance, snr, log_snr, vlb_weight; as CSV (header line) or as a JSON array of
// objects. Values printed with 17 significant digits (exact doubles).
std::string schedule_table(const Schedule& schedule, bool json);

// K timesteps spread evenly over [0, T): round(i (T-1) / (K-1)), i = 0..K-1 (K = 1: {T-1}).
std::vector<int> even_timesteps(int T, int K);

}  // namespace ddpm
