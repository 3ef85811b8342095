// The training objectives, as a weight per timestep on the per-sample mean squared error of
// the prediction against its target (mean over the sample's dimensions, so losses are per
// dimension):
//
//   simple:  w_t = 1                                  (Ho et al.'s L_simple)
//   vlb:     w_t makes w_t ||target - pred||^2 equal the bound's KL term
//            L_{t-1} = ||mu_tilde - mu_theta||^2 / (2 sigma_t^2) with the fixed variance
//            sigma_t^2 (fixed_large: beta_t, fixed_small: beta_tilde_t). The mean error is
//            a multiple of the prediction's error, which gives, per target:
//              epsilon: mu err = beta_t / (sqrt(alpha_t) sqrt(1-abar_t)) eps err
//                       w = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t))
//              x0:      mu err = coef1_t x0 err,   coef1_t = sqrt(abar_{t-1}) beta_t / (1-abar_t)
//                       w = coef1_t^2 / (2 sigma_t^2)
//              v:       x0 = sqrt(abar) x_t - sqrt(1-abar) v, so x0 err = sqrt(1-abar) v err
//                       w = coef1_t^2 (1 - abar_t) / (2 sigma_t^2)  (= w_epsilon * abar_t)
//   hybrid:  w_t = 1 + lambda * w_vlb_t, lambda = 0.001 by default (Nichol & Dhariwal; with
//            a fixed variance the VLB term reweights the mean's loss).
// An importance-sampling weight per sample multiplies on top (models/ddpm/timestep_sampler.h).
#pragma once

#include <string>
#include <vector>

#include "engine/ops.h"
#include "models/ddpm/parameterization.h"
#include "models/ddpm/schedule.h"

namespace ddpm {

enum class LossKind { Simple, Vlb, Hybrid };
LossKind parse_loss_kind(const std::string& name);  // "simple" | "vlb" | "hybrid"
const char* loss_kind_name(LossKind kind);

struct LossConfig {
  LossKind kind = LossKind::Simple;
  double hybrid_lambda = 0.001;
  // sigma_t^2 = beta_t (else beta_tilde_t, infinite at t = 0): the config's `variance`, the
  // samplers' too (image_config.cpp, toy_train.cpp: one key)
  bool vlb_fixed_large = true;
  double vlb_clamp = 0.0;       // > 0: cap the VLB weight
};

// The weight w_t of every timestep for this loss and target.
std::vector<double> loss_weights(const Schedule& schedule, Target target, const LossConfig& c);

struct LossResult {
  Tensor loss;                     // scalar: mean over the batch of weight * mse (on the tape)
  std::vector<double> per_sample;  // w_t * mse of each sample (no importance weight)
};

// prediction and target (N, ...); t (N); importance (N) or empty for 1.
LossResult diffusion_loss(const Tensor& prediction, const Tensor& target,
                          const std::vector<int>& t, const std::vector<double>& weights,
                          const std::vector<double>& importance);

}  // namespace ddpm
