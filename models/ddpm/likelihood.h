// The DDPM variational bound on the negative log-likelihood, in bits per dimension
// (Ho et al. 2020, eq. 5; the figure their Table 2 reports as "NLL <= 3.70" on CIFAR-10).
//
// For an image x0 of D values in [-1, 1], with the schedule's tables (models/ddpm/schedule.h,
// 0-based t) and the network's x0 estimate x0_hat(x_t, t) (any target, through
// models/ddpm/parameterization.h; clipped to [-1, 1] when clip_x0, as the sampler does):
//
//   -log p(x0) <= L_T + sum_{t=1}^{T-1} L_{t-1} + L_0               (nats; / (D ln 2) = bits/dim)
//   L_T     = KL(q(x_T | x0) || N(0, I))                 prior: no network, analytic in x0
//   L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))   t = 1 .. T-1, x_t ~ q(x_t | x0)
//           = sum_d 1/2 (log(s_p / s_q) + s_q / s_p - 1) + coef1_t^2 (x0 - x0_hat)^2 / (2 s_p)
//             with s_q = beta_tilde_t, s_p = beta_t (fixed_large) or beta_tilde_t (fixed_small):
//             both means are coef1_t x0(.) + coef2_t x_t, so x_t cancels from their difference
//   L_0     = -log p(x0 | x_1): the discretized Gaussian decoder, N(x0_hat, s_0) integrated
//             over each value's bin (width 2 / (bins - 1); the outermost bins extend to
//             -inf / +inf), probabilities floored at 1e-12, as Ho et al.'s and Nichol &
//             Dhariwal's code do. s_0 = beta_tilde_1 for both variance choices (beta_tilde_0
//             is 0; their code makes the same substitution). bins = 0 instead: the Gaussian
//             density itself, for continuous data (then the figure is a density's, in
//             bits/dim of the continuous space).
//
// The T network terms (t = 0 is L_0, t >= 1 is L_{t-1}) are either all evaluated
// (timesteps = 0 or T - 1) or estimated without bias: L_0 always evaluated (it is unlike its
// neighbours, and stratifying it with them costs half the precision), and [1, T) cut into K
// contiguous strata of sizes s_k, one t drawn uniformly in each stratum per image, the KL
// sum estimated by sum_k s_k L(t_k). The figure is the mean over images, with the standard
// error of that mean (the spread over images, which includes the stratification's).
//
// Randomness: x_t's noise from Philox(seed, kNoiseStream + batch * (K + 1) + k + 1), the
// stratum draws from philox_uniform(seed, kTimeStream + k, image): the same seed, batch and
// image order give the same figure.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/ddpm/parameterization.h"
#include "models/ddpm/sampler.h"
#include "models/ddpm/schedule.h"

namespace ddpm {

struct LikelihoodConfig {
  Target target = Target::Epsilon;
  bool fixed_large = true;  // the reverse variance: beta_t, else beta_tilde_t
  bool clip_x0 = true;      // clip x0_hat to [-1, 1]
  int timesteps = 0;        // K strata of [1, T) per image, plus L_0; 0 = all T terms
  int bins = 256;           // the decoder's levels over [-1, 1]; 0 = continuous density
  int64_t batch = 64;       // images per network call
  uint64_t seed = 0;
};

struct LikelihoodResult {
  int64_t images = 0, dims = 0;  // images evaluated, D per image
  int terms_per_image = 0;       // network terms per image: K + 1 (T when all)
  double bits_per_dim = 0;       // the bound, mean over images
  double standard_error = 0;     // of that mean
  // its parts, means over images, in bits/dim: L_T, the sum of L_{t-1} over t >= 1 (as
  // estimated), and L_0
  double prior_bpd = 0, kl_bpd = 0, decoder_bpd = 0;
  std::vector<double> per_image;  // each image's bits/dim
};

// The terms, per image, summed over its D values, in nats (exposed for the tests).
double prior_kl(const Schedule& s, const float* x0, int64_t dims);
double posterior_kl(const Schedule& s, int t, bool fixed_large, const float* x0,
                    const float* x0_hat, int64_t dims);  // t >= 1
double decoder_nll(const Schedule& s, const float* x0, const float* x0_hat, int64_t dims,
                   int bins);

// Images [first, first + count) of the evaluated set as (count, H, W, C) in [-1, 1] on
// `device`.
using ImageSource = std::function<Tensor(int64_t first, int64_t count)>;
// Called after each batch with (images done, images in all).
using LikelihoodProgress = std::function<void(int64_t done, int64_t total)>;

LikelihoodResult evaluate_likelihood(const Schedule& schedule, const Denoiser& denoiser,
                                     const LikelihoodConfig& config, int64_t n_images,
                                     const ImageSource& images,
                                     const LikelihoodProgress& progress = {});

}  // namespace ddpm
