#include "models/ddpm/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "engine/cuda_graph.h"
#include "engine/op_profile.h"

namespace ddpm {

SamplerKind parse_sampler_kind(const std::string& name) {
  if (name == "ddpm") return SamplerKind::Ddpm;
  if (name == "ddim") return SamplerKind::Ddim;
  THROW_ERROR("unknown sampler '" << name << "' (expected ddpm or ddim)");
}

namespace {

// Everything denoising step i needs besides x, as rows of one (kRows, n) table (n copies of
// each value: the per-sample ops take one coefficient per sample). One upload per step;
// with cuda_graph the table and the step's noise index live at fixed addresses and a
// captured step reads each step's values from there (kernels/step_inputs.h).
//   x0    = x0_x x + x0_pred pred                  (epsilon and v targets; x0: pred)
//   DDPM: x = mix_a x0 + mix_b x
//   DDIM: eps = eps_x x + eps_x0 x0, x = mix_a x0 + mix_b eps
//   noise: x = one x + sigma z,  z ~ Philox(seed, kSamplerStepStream + i)   (i > 0, sigma > 0)
enum Row : int64_t { kTime, kX0X, kX0Pred, kMixA, kMixB, kEpsX, kEpsX0, kOne, kSigma, kRows };

struct StepPlan {
  double row[kRows] = {};
  bool noise = false;
};

StepPlan plan_step(const Schedule& rs, const std::vector<int>& tau, const SamplerConfig& c,
                   int i) {
  StepPlan p;
  const double s = rs.sqrt_alpha_bar[i], n = rs.sqrt_one_minus_alpha_bar[i];
  p.row[kTime] = tau[i];
  if (c.target == Target::Epsilon) {
    p.row[kX0X] = 1.0 / s;
    p.row[kX0Pred] = -n / s;
  } else if (c.target == Target::V) {
    p.row[kX0X] = s;
    p.row[kX0Pred] = -n;
  }
  double sigma = 0;
  if (c.kind == SamplerKind::Ddpm) {
    p.row[kMixA] = rs.posterior_coef1[i];
    p.row[kMixB] = rs.posterior_coef2[i];
    sigma = std::sqrt(c.fixed_large ? rs.beta[i] : rs.posterior_variance[i]);
  } else {
    const double ab = rs.alpha_bar[i], ab_prev = rs.alpha_bar_prev[i];
    sigma = c.eta * std::sqrt((1 - ab_prev) / (1 - ab)) * std::sqrt(1 - ab / ab_prev);
    p.row[kEpsX] = 1.0 / n;
    p.row[kEpsX0] = -s / n;
    p.row[kMixA] = std::sqrt(ab_prev);
    p.row[kMixB] = std::sqrt(std::max(0.0, 1 - ab_prev - sigma * sigma));
  }
  p.row[kOne] = 1.0;
  p.row[kSigma] = sigma;
  p.noise = i > 0 && sigma > 0;
  return p;
}

// The fixed tensors a sampling loop works on: x (replaced by each step's result), the
// step table, and the step's noise index (an f64 slot holding a uint64).
struct LoopState {
  Tensor x, rows, noise_index;
  Tensor row(Row r) const {
    const int64_t n = rows.shape()[1];
    return rows.window(r * n, Shape{n});
  }
};

// Writes step i's values into the loop's fixed buffers (staged uploads on a GPU).
void upload_step(const LoopState& st, const StepPlan& p, int i) {
  const int64_t n = st.rows.shape()[1];
  std::vector<double> table(static_cast<size_t>(kRows * n));
  for (int64_t r = 0; r < kRows; ++r)
    std::fill(table.begin() + r * n, table.begin() + (r + 1) * n, p.row[r]);
  st.rows.copy_from(Tensor::from_vector<double>(st.rows.shape(), table).to(st.rows.dtype()));
  uint64_t index = static_cast<uint64_t>(i);
  double slot = 0;
  std::memcpy(&slot, &index, sizeof slot);
  st.noise_index.copy_from(Tensor::from_vector<double>(Shape{1}, {slot}));
}

// One denoising step on st.x; its predicted x0 returned (the caller may record it).
// live: the noise stream's index read from st.noise_index (a captured step), else i.
Tensor denoise_step(const Denoiser& denoiser, const SamplerConfig& c, const LoopState& st,
                    const std::vector<int>& t_host, bool noise, bool live, int i,
                    uint64_t seed) {
  const Tensor& x = st.x;
  const Tensor pred = denoiser(x, Timesteps(t_host, st.rows.device() == Device::CPU
                                                        ? Tensor()
                                                        : st.row(kTime),
                                            nullptr));
  Tensor x0 = c.target == Target::X0
                  ? pred
                  : per_sample_axpby(st.row(kX0X), x, st.row(kX0Pred), pred);
  if (c.clip_x0) x0 = clamp(x0, -c.clip_range, c.clip_range);
  Tensor next =
      c.kind == SamplerKind::Ddpm
          ? per_sample_axpby(st.row(kMixA), x0, st.row(kMixB), x)
          : per_sample_axpby(st.row(kMixA), x0, st.row(kMixB),
                             per_sample_axpby(st.row(kEpsX), x, st.row(kEpsX0), x0));
  if (noise) {
    const StepKey stream =
        live ? StepKey(kSamplerStepStream, 1, static_cast<const uint64_t*>(st.noise_index.raw()))
             : StepKey(kSamplerStepStream + static_cast<uint64_t>(i));
    const Tensor z = randn(x.shape(), seed, stream, x.device());
    next = per_sample_axpby(st.row(kOne), next, st.row(kSigma), z.to(x.dtype()));
  }
  x.copy_from(next);
  return x0;
}

}  // namespace

SampleResult sample(const Schedule& schedule, const Denoiser& denoiser, const SamplerConfig& c,
                    const Shape& shape, uint64_t seed, Device device, const Tensor& start) {
  NoGradGuard no_grad;
  CHECK(c.eta >= 0, "sampler: eta must be >= 0, got " << c.eta);
  CHECK(c.clip_range > 0, "sampler: clip_range must be > 0, got " << c.clip_range);
  const std::vector<int> tau = even_timesteps(schedule.T, c.steps == 0 ? schedule.T : c.steps);
  const Schedule rs = respace(schedule, tau);
  const int64_t n = shape[0];
  const Tensor x_start = start.defined() ? start : randn(shape, seed, kSamplerStartStream, device);
  CHECK(x_start.shape() == shape,
        "sampler: start noise " << x_start.describe() << " is not " << shape.str());
  LoopState st;
  st.x = x_start.clone();  // the loop's own buffer: each step's result is copied into it
  st.rows = Tensor::empty(Shape{kRows, n}, st.x.dtype(), st.x.device());
  st.noise_index = Tensor::empty(Shape{1}, DType::F64, st.x.device());
  // With cuda_graph on a GPU: per kind of step (with noise or without), one eager step, then
  // the step captured and replayed. Recorded steps stay eager (they keep a copy of x0).
  const bool graphs = c.cuda_graph && st.x.device() != Device::CPU;
  CHECK(!graphs || !op_profiling(), "sampler: the op profile times ops one by one, which a "
                                    "CUDA graph's replay does not launch; profile without "
                                    "cuda_graph");
  std::unique_ptr<CudaGraph> captured[2];
  int eager_taken[2] = {0, 0};
  SampleResult result;
  for (int i = rs.T - 1; i >= 0; --i) {
    const StepPlan plan = plan_step(rs, tau, c, i);
    const std::vector<int> t_host(n, tau[i]);
    upload_step(st, plan, i);
    const auto times_recorded = std::count(c.record.begin(), c.record.end(), i);
    const bool recorded = times_recorded > 0;
    const int kind = plan.noise ? 1 : 0;
    if (!graphs || recorded || eager_taken[kind] < 1) {
      eager_taken[kind] += 1;
      const Tensor x0 = denoise_step(denoiser, c, st, t_host, plan.noise, graphs, i, seed);
      for (int64_t k = 0; k < times_recorded; ++k)  // (a short loop records a step repeatedly)
        result.progress.emplace_back(tau[i], x0.clone());
      continue;
    }
    if (!captured[kind]) {
      captured[kind] = std::make_unique<CudaGraph>();
      captured[kind]->capture(
          [&] { (void)denoise_step(denoiser, c, st, t_host, plan.noise, true, i, seed); });
    }
    captured[kind]->launch();
  }
  result.x0 = st.x;
  return result;
}

Tensor slerp(const Tensor& a, const Tensor& b, int64_t n) {
  CHECK(a.shape() == b.shape() && a.shape()[0] == 1 && n >= 1,
        "slerp: need two (1, ...) tensors of one shape and n >= 1, got " << a.describe() << ", "
                                                                        << b.describe());
  const std::vector<float> av = a.to(Device::CPU).to_vector<float>(),
                           bv = b.to(Device::CPU).to_vector<float>();
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    dot += double(av[i]) * bv[i];
    na += double(av[i]) * av[i];
    nb += double(bv[i]) * bv[i];
  }
  const double theta = std::acos(std::clamp(dot / std::sqrt(na * nb), -1.0, 1.0));
  std::vector<float> z;
  for (int64_t k = 0; k < n; ++k) {
    const double f = n == 1 ? 0.0 : double(k) / double(n - 1);
    const double wa = theta < 1e-6 ? 1 - f : std::sin((1 - f) * theta) / std::sin(theta);
    const double wb = theta < 1e-6 ? f : std::sin(f * theta) / std::sin(theta);
    for (size_t i = 0; i < av.size(); ++i) z.push_back(static_cast<float>(wa * av[i] + wb * bv[i]));
  }
  std::vector<int64_t> dims = {n};
  for (int d = 1; d < a.shape().ndim(); ++d) dims.push_back(a.shape()[d]);
  return Tensor::from_vector(Shape(dims), z).to(a.device());
}

}  // namespace ddpm
