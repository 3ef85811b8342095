// Reverse samplers: from noise to data with a trained denoiser.
//
// Both run on a subsequence tau_0 < ... < tau_{K-1} of the T training timesteps (K = T:
// every step), through the respaced schedule (models/ddpm/schedule.h: respace), and call the
// denoiser with the ORIGINAL timesteps tau_i.
//
// DDPM ancestral (Ho et al. 2020), for i = K-1 .. 0:
//   x0_hat = x0 from the prediction (clipped to [-r, r] if asked: images use r = 1. Without
//            it, an epsilon model at the cosine schedule's last steps, where sqrt(abar)
//            ~ 5e-5, turns a small eps error into a huge x0 and the sample diverges)
//   mean   = coef1_i x0_hat + coef2_i x        (the posterior mean)
//   x      = mean + sigma_i z  (no noise at i = 0)
//   sigma_i^2 = beta_tilde_i (fixed_small) or beta_i (fixed_large; at i = 0 unused)
// DDIM (Song et al. 2021), with eps_hat implied by x and x0_hat:
//   sigma_i = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)
//   x = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_i^2) eps_hat + sigma_i z
// eta = 0 is deterministic; eta = 1 matches DDPM with fixed_small.
// Noise: x_{K} ~ Philox(seed, stream kSamplerStartStream), z at step i ~ Philox(seed,
// kSamplerStepStream + i) (randn in engine/ops.h; a test can draw the same z).
// Everything is engine ops under a NoGradGuard, so the same code samples on CPU or GPU.
#pragma once

#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "models/ddpm/parameterization.h"
#include "models/ddpm/schedule.h"

namespace ddpm {

// The timesteps of a denoiser's batch: the host's list, and, from a training step on the
// GPU, what a captured step (engine/cuda_graph.h) needs instead of uploads of its own: the
// same list in device memory (f32) and the step's index in device memory (the StepInputs
// block that per-step random streams read: kernels/step_inputs.h). A model may use the
// device parts or ignore them; it converts to the host list, so a denoiser can take that.
struct Timesteps {
  std::vector<int> host;
  Tensor device;                  // (N) f32 on the batch's device, or undefined
  const uint64_t* step = nullptr;  // &StepInputs::step in device memory, or null

  Timesteps(std::vector<int> t) : host(std::move(t)) {}  // NOLINT: implicit by design
  Timesteps(std::initializer_list<int> t) : host(t) {}
  Timesteps(std::vector<int> t, Tensor on_device, const uint64_t* step_on_device)
      : host(std::move(t)), device(std::move(on_device)), step(step_on_device) {}
  operator const std::vector<int>&() const { return host; }  // NOLINT
};

// The network: prediction (in the configured target) for x_t at original timesteps t.
using Denoiser = std::function<Tensor(const Tensor& x_t, const Timesteps& t)>;

constexpr uint64_t kSamplerStartStream = 0x5A3B000000000000ull;
constexpr uint64_t kSamplerStepStream = 0x5A3B000000000001ull;

enum class SamplerKind { Ddpm, Ddim };
SamplerKind parse_sampler_kind(const std::string& name);  // "ddpm" | "ddim"

struct SamplerConfig {
  SamplerKind kind = SamplerKind::Ddpm;
  int steps = 0;            // K; 0 = all T
  double eta = 0.0;         // DDIM only
  bool fixed_large = true;  // DDPM only: sigma^2 = beta (else beta_tilde)
  bool clip_x0 = true;      // clip the predicted x0 to [-clip_range, clip_range]
  double clip_range = 1.0;  // 1 for images in [-1, 1]; the data's extent for 2-D data
  Target target = Target::Epsilon;
  std::vector<int> record;  // loop indices i at which to keep the predicted x0
  // On a GPU: each kind of denoising step (with noise, without) taken once eagerly, then
  // captured as one CUDA graph and replayed (engine/cuda_graph.h); the same bits.
  bool cuda_graph = false;
};

struct SampleResult {
  Tensor x0;                                   // the samples
  std::vector<std::pair<int, Tensor>> progress;  // (timestep tau_i, predicted x0) as recorded
};

// `start`: the initial noise x_T, or undefined to draw it from (seed, kSamplerStartStream).
SampleResult sample(const Schedule& schedule, const Denoiser& denoiser, const SamplerConfig& c,
                    const Shape& shape, uint64_t seed, Device device, const Tensor& start = {});

// n noises along the great circle from a to b (spherical interpolation, as the DDPM paper
// interpolates latents): z_k = sin((1-f) theta)/sin(theta) a + sin(f theta)/sin(theta) b,
// f = k/(n-1), theta the angle between a and b. a and b: one sample each, (1, ...).
Tensor slerp(const Tensor& a, const Tensor& b, int64_t n);

}  // namespace ddpm
