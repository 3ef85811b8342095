// How a training batch picks its timesteps.
//
//   uniform     t ~ U{0..T-1}
//   stratified  [0, T) cut into N equal strata, one t drawn in each, then shuffled: the batch
//               covers the whole range every step (lower-variance estimate of the same mean)
//   importance  loss-aware (Nichol & Dhariwal 2021): keep the last `history` losses of each
//               t; once every t has its history, p_t ~ sqrt(E[L_t^2]), mixed with a uniform
//               share (p = (1-u) p + u/T, u = 0.001); until then uniform. Each sample carries
//               the weight 1 / (T p_t), so the weighted loss stays an unbiased estimate of the
//               uniform-t objective.
// Draws come from Philox (seed, stream), so a step's timesteps are reproducible. The
// importance history is state: it goes into checkpoints (state() / load_state()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpm {

enum class TimestepSamplerKind { Uniform, Stratified, Importance };
TimestepSamplerKind parse_timestep_sampler(const std::string& name);
const char* timestep_sampler_name(TimestepSamplerKind kind);

struct TimestepBatch {
  std::vector<int> t;
  std::vector<double> weights;  // 1 except for importance sampling
};

class TimestepSampler {
 public:
  TimestepSampler(TimestepSamplerKind kind, int T, int history = 10, double uniform_share = 0.001);

  TimestepBatch sample(int n, uint64_t seed, uint64_t stream) const;
  // Record the per-sample losses of a batch (importance sampling's history; no-op otherwise).
  void update(const std::vector<int>& t, const std::vector<double>& losses);
  // The trainer's way: the losses of training step `step`, held until merge_recorded() lets
  // them into the history (once step + 1 has drawn its timesteps, so the draws are the same
  // whether a step's losses are read at once or a step late). Held losses are part of state().
  void record(int64_t step, const std::vector<int>& t, const std::vector<double>& losses);
  // Updates the history with every recorded step < `drawn`, in step order.
  void merge_recorded(int64_t drawn);

  bool warmed_up() const;                 // every t has a full history
  std::vector<double> probabilities() const;  // the current p_t (uniform before warm-up)
  TimestepSamplerKind kind() const { return kind_; }

  nlohmann::json state() const;
  // Every field is validated (lengths, ranges, finiteness); errors start with `context`
  // (e.g. the checkpoint's file) and name the field.
  void load_state(const nlohmann::json& state,
                  const std::string& context = "timestep sampler state");

 private:
  TimestepSamplerKind kind_;
  int T_, history_;
  double uniform_share_;
  std::vector<double> losses_;  // (T, history) ring buffers
  std::vector<int> counts_;     // values written per t (capped at history)
  std::vector<int> next_;       // ring position per t
  struct Recorded {
    int64_t step = 0;
    std::vector<int> t;
    std::vector<double> losses;
  };
  std::vector<Recorded> recorded_;  // not yet in the history, in step order
};

}  // namespace ddpm
