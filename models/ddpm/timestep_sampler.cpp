#include "models/ddpm/timestep_sampler.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/check.h"
#include "engine/philox.h"

namespace ddpm {

TimestepSamplerKind parse_timestep_sampler(const std::string& name) {
  if (name == "uniform") return TimestepSamplerKind::Uniform;
  if (name == "stratified") return TimestepSamplerKind::Stratified;
  if (name == "importance") return TimestepSamplerKind::Importance;
  THROW_ERROR("unknown timestep sampler '" << name
                                           << "' (expected uniform, stratified or importance)");
}

const char* timestep_sampler_name(TimestepSamplerKind kind) {
  switch (kind) {
    case TimestepSamplerKind::Uniform: return "uniform";
    case TimestepSamplerKind::Stratified: return "stratified";
    case TimestepSamplerKind::Importance: return "importance";
  }
  return "?";
}

TimestepSampler::TimestepSampler(TimestepSamplerKind kind, int T, int history,
                                 double uniform_share)
    : kind_(kind),
      T_(T),
      history_(history),
      uniform_share_(uniform_share),
      losses_(static_cast<size_t>(T) * history, 0.0),
      counts_(T, 0),
      next_(T, 0) {
  CHECK(T >= 1 && history >= 1, "timestep sampler: T and history must be >= 1");
  CHECK(uniform_share > 0 && uniform_share <= 1,
        "timestep sampler: uniform share must be in (0, 1], got " << uniform_share);
}

bool TimestepSampler::warmed_up() const {
  return std::all_of(counts_.begin(), counts_.end(), [&](int c) { return c == history_; });
}

std::vector<double> TimestepSampler::probabilities() const {
  std::vector<double> p(T_, 1.0 / T_);
  if (kind_ != TimestepSamplerKind::Importance || !warmed_up()) return p;
  double total = 0;
  for (int t = 0; t < T_; ++t) {
    double sq = 0;
    for (int h = 0; h < history_; ++h) sq += losses_[t * history_ + h] * losses_[t * history_ + h];
    p[t] = std::sqrt(sq / history_);
    total += p[t];
  }
  for (int t = 0; t < T_; ++t)
    p[t] = total > 0 ? (1.0 - uniform_share_) * p[t] / total + uniform_share_ / T_ : 1.0 / T_;
  return p;
}

TimestepBatch TimestepSampler::sample(int n, uint64_t seed, uint64_t stream) const {
  CHECK(n >= 1, "timestep sampler: batch size must be >= 1, got " << n);
  TimestepBatch b;
  b.t.resize(n);
  b.weights.assign(n, 1.0);
  auto u = [&](int64_t i) { return static_cast<double>(philox_uniform(seed, stream, i)); };
  if (kind_ == TimestepSamplerKind::Stratified) {
    // Stratum i holds the integers t with floor(t n / T) = i: [ceil(i T/n), ceil((i+1) T/n)).
    // With n > T some strata hold no integer; then t = floor((i + u) T / n) instead.
    for (int i = 0; i < n; ++i) {
      const int64_t lo = (static_cast<int64_t>(i) * T_ + n - 1) / n;
      const int64_t hi = (static_cast<int64_t>(i + 1) * T_ + n - 1) / n;
      b.t[i] = hi > lo ? static_cast<int>(lo + static_cast<int64_t>(u(i) * (hi - lo)))
                       : std::min(T_ - 1, static_cast<int>((i + u(i)) * T_ / n));
    }
    for (int i = n - 1; i > 0; --i) {  // Fisher-Yates with the next n draws
      const int j = std::min(i, static_cast<int>(u(n + i) * (i + 1)));
      std::swap(b.t[i], b.t[j]);
    }
    return b;
  }
  const std::vector<double> p = probabilities();
  std::vector<double> cdf(T_);
  double acc = 0;
  for (int t = 0; t < T_; ++t) cdf[t] = (acc += p[t]);
  for (int i = 0; i < n; ++i) {
    const double x = u(i) * acc;
    const int t = static_cast<int>(std::upper_bound(cdf.begin(), cdf.end(), x) - cdf.begin());
    b.t[i] = std::min(t, T_ - 1);
    if (kind_ == TimestepSamplerKind::Importance) b.weights[i] = 1.0 / (T_ * p[b.t[i]]);
  }
  return b;
}

void TimestepSampler::update(const std::vector<int>& t, const std::vector<double>& losses) {
  CHECK(t.size() == losses.size(), "timestep sampler: " << t.size() << " timesteps but "
                                                        << losses.size() << " losses");
  if (kind_ != TimestepSamplerKind::Importance) return;
  for (size_t i = 0; i < t.size(); ++i) {
    const int ti = t[i];
    CHECK(ti >= 0 && ti < T_, "timestep sampler: timestep " << ti << " outside [0, " << T_ << ")");
    losses_[ti * history_ + next_[ti]] = losses[i];
    next_[ti] = (next_[ti] + 1) % history_;
    counts_[ti] = std::min(counts_[ti] + 1, history_);
  }
}

void TimestepSampler::record(int64_t step, const std::vector<int>& t,
                             const std::vector<double>& losses) {
  CHECK(t.size() == losses.size(), "timestep sampler: " << t.size() << " timesteps but "
                                                        << losses.size() << " losses");
  if (kind_ != TimestepSamplerKind::Importance) return;
  CHECK(recorded_.empty() || recorded_.back().step < step,
        "timestep sampler: step " << step << " recorded after step " << recorded_.back().step);
  recorded_.push_back({step, t, losses});
}

void TimestepSampler::merge_recorded(int64_t drawn) {
  size_t merged = 0;
  for (; merged < recorded_.size() && recorded_[merged].step < drawn; ++merged)
    update(recorded_[merged].t, recorded_[merged].losses);
  recorded_.erase(recorded_.begin(), recorded_.begin() + static_cast<std::ptrdiff_t>(merged));
}

nlohmann::json TimestepSampler::state() const {
  nlohmann::json recorded = nlohmann::json::array();
  for (const Recorded& r : recorded_)
    recorded.push_back({{"step", r.step}, {"t", r.t}, {"losses", r.losses}});
  return {{"kind", timestep_sampler_name(kind_)}, {"T", T_},          {"history", history_},
          {"losses", losses_},                    {"counts", counts_}, {"next", next_},
          {"recorded", recorded}};
}

namespace {

// A JSON array of exactly `size` numbers each passing `ok`, or an error naming the field.
template <class T, class Ok>
std::vector<T> checked_array(const nlohmann::json& s, const char* field, size_t size, Ok ok,
                             const std::string& context, const char* allowed) {
  CHECK(s.contains(field) && s[field].is_array() && s[field].size() == size,
        context << ": field '" << field << "' must be a list of " << size << " numbers");
  std::vector<T> out;
  out.reserve(size);
  for (size_t i = 0; i < size; ++i) {
    const nlohmann::json& v = s[field][i];
    const bool typed = std::is_integral_v<T> ? v.is_number_integer() : v.is_number();
    CHECK(typed && ok(v.get<T>()), context << ": field '" << field << "' entry " << i << " is "
                                           << v.dump() << "; " << allowed);
    out.push_back(v.get<T>());
  }
  return out;
}

}  // namespace

void TimestepSampler::load_state(const nlohmann::json& s, const std::string& context) {
  CHECK(s.is_object() && s.contains("kind") && s.contains("T") && s.contains("history"),
        context << ": missing kind, T or history");
  CHECK(s["kind"] == timestep_sampler_name(kind_),
        context << " is for '" << s["kind"].dump() << "', this run uses '"
                << timestep_sampler_name(kind_) << "'");
  CHECK(s["T"] == T_ && s["history"] == history_,
        context << " has T=" << s["T"].dump() << ", history=" << s["history"].dump()
                << "; this run has T=" << T_ << ", history=" << history_);
  // Every field is checked before it is used: 'next' indexes the history, so a value out of
  // range would write outside it (a crafted or corrupt checkpoint must not).
  const int history = history_;
  std::vector<double> losses = checked_array<double>(
      s, "losses", losses_.size(), [](double v) { return std::isfinite(v) && v >= 0; }, context,
      "losses must be finite and >= 0");
  std::vector<int> counts = checked_array<int>(
      s, "counts", counts_.size(), [history](int v) { return v >= 0 && v <= history; }, context,
      ("counts must be in [0, " + std::to_string(history) + "]").c_str());
  std::vector<int> next = checked_array<int>(
      s, "next", next_.size(), [history](int v) { return v >= 0 && v < history; }, context,
      ("positions must be in [0, " + std::to_string(history) + ")").c_str());
  // Losses recorded and not yet in the history (absent from older checkpoints: none).
  std::vector<Recorded> recorded;
  if (s.contains("recorded")) {
    const nlohmann::json& list = s["recorded"];
    CHECK(list.is_array(), context << ": field 'recorded' must be a list");
    const int T = T_;
    for (size_t i = 0; i < list.size(); ++i) {
      const nlohmann::json& r = list[i];
      const std::string where = context + ": recorded entry " + std::to_string(i);
      CHECK(r.is_object() && r.contains("step") && r["step"].is_number_integer() &&
                r["step"].get<int64_t>() >= 0 && r.contains("t") && r["t"].is_array(),
            where << " needs a 'step' >= 0 and a list 't'");
      Recorded e;
      e.step = r["step"].get<int64_t>();
      CHECK(recorded.empty() || recorded.back().step < e.step,
            where << ": step " << e.step << " is not after the entry before it");
      e.t = checked_array<int>(r, "t", r["t"].size(), [T](int v) { return v >= 0 && v < T; },
                               where, ("timesteps must be in [0, " + std::to_string(T) + ")").c_str());
      e.losses = checked_array<double>(
          r, "losses", e.t.size(), [](double v) { return std::isfinite(v) && v >= 0; }, where,
          "losses must be finite and >= 0");
      recorded.push_back(std::move(e));
    }
  }
  losses_ = std::move(losses);
  counts_ = std::move(counts);
  next_ = std::move(next);
  recorded_ = std::move(recorded);
}

}  // namespace ddpm
