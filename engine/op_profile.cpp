#include "engine/op_profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <utility>

#include "engine/check.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#endif

namespace ddpm {

namespace {

std::atomic<bool> g_on{false};
// The innermost OpShape's shape on this thread; empty outside any.
thread_local std::string g_shape;

// A finished range: what op_profile_take() sums, by (clock, name) and by shape.
struct Timed {
  std::string name, shape;
  bool cpu = false;
  double ms = 0;
};

std::vector<OpTime> summed(const std::vector<Timed>& ranges) {
  std::map<std::pair<bool, std::string>, OpTime> by_name;
  std::map<std::pair<bool, std::string>, std::map<std::string, OpShapeTime>> by_shape;
  for (const Timed& r : ranges) {
    const std::pair<bool, std::string> key{r.cpu, r.name};
    OpTime& t = by_name[key];
    t.name = r.name;
    t.cpu = r.cpu;
    ++t.calls;
    t.ms += r.ms;
    if (!r.shape.empty()) {
      OpShapeTime& s = by_shape[key][r.shape];
      s.shape = r.shape;
      ++s.calls;
      s.ms += r.ms;
    }
  }
  std::vector<OpTime> out;
  for (auto& [key, t] : by_name) {
    for (auto& [shape, s] : by_shape[key]) t.shapes.push_back(s);
    std::sort(t.shapes.begin(), t.shapes.end(), [](const OpShapeTime& a, const OpShapeTime& b) {
      return a.ms != b.ms ? a.ms > b.ms : a.shape < b.shape;
    });
    out.push_back(t);
  }
  return out;
}

// ---- CPU ranges: the host's clock, each range's time less the ranges nested in it ----

std::atomic<double (*)()> g_cpu_clock{nullptr};

double cpu_now_ms() {
  if (double (*now)() = g_cpu_clock.load()) return now();
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The CPU ranges open on this thread, innermost last: when each started, and how much of its
// time the ranges nested in it took.
struct OpenRange {
  double start = 0, nested = 0;
};
thread_local std::vector<OpenRange> g_open;

std::mutex g_cpu_mu;
std::vector<Timed> g_cpu_ranges;

#if DDPM_WITH_CUDA
// Events are created once and reused: a warm profiled loop creates none.
struct Record {
  std::string name, shape;
  cudaEvent_t start = nullptr, stop = nullptr;
};

class Recorder {
 public:
  static Recorder& instance() {
    static Recorder* r = new Recorder();  // never destroyed, as the allocator
    return *r;
  }
  int begin(const char* name) {
    std::lock_guard<std::mutex> lock(mu_);
    Record r;
    r.name = name;
    r.shape = g_shape;
    r.start = event();
    r.stop = event();
    CUDA_CHECK(cudaEventRecord(r.start, engine_stream()));
    records_.push_back(std::move(r));
    return static_cast<int>(records_.size()) - 1;
  }
  void end(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    CUDA_CHECK(cudaEventRecord(records_[index].stop, engine_stream()));
  }
  // The ranges recorded since the last take, timed (one wait for the GPU), and cleared.
  std::vector<Timed> take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Timed> out;
    for (const Record& r : records_) {
      CUDA_CHECK(cudaEventSynchronize(r.stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
      out.push_back({r.name, r.shape, false, ms});
      free_.push_back(r.start);
      free_.push_back(r.stop);
    }
    records_.clear();
    return out;
  }

 private:
  cudaEvent_t event() {
    if (!free_.empty()) {
      cudaEvent_t e = free_.back();
      free_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));  // with timing (the default flags)
    return e;
  }
  std::mutex mu_;
  std::vector<Record> records_;
  std::vector<cudaEvent_t> free_;
};
#endif

}  // namespace

void set_op_profiling(bool on) { g_on = on; }
bool op_profiling() { return g_on; }
void set_op_profile_cpu_clock(double (*now_ms)()) { g_cpu_clock = now_ms; }

void OpShape::enter(std::string shape) {
  outer_ = std::move(g_shape);
  g_shape = std::move(shape);
  active_ = true;
}
OpShape::~OpShape() {
  if (active_) g_shape = std::move(outer_);
}

OpTimer::OpTimer(const char* name, bool on_gpu) {
  if (!g_on) return;
  if (!on_gpu) {
    cpu_ = true;
    name_ = name;
    g_open.push_back({cpu_now_ms(), 0});
    return;
  }
#if DDPM_WITH_CUDA
  record_ = Recorder::instance().begin(name);
#endif
}

OpTimer::~OpTimer() {
  if (cpu_) {
    const OpenRange open = g_open.back();
    g_open.pop_back();
    const double ms = cpu_now_ms() - open.start;
    if (!g_open.empty()) g_open.back().nested += ms;  // not the outer range's own time
    std::lock_guard<std::mutex> lock(g_cpu_mu);
    // g_shape is the one at the range's start: OpShape scopes close in the order they opened
    g_cpu_ranges.push_back({std::move(name_), g_shape, true, ms - open.nested});
    return;
  }
#if DDPM_WITH_CUDA
  if (record_ >= 0) Recorder::instance().end(record_);
#endif
}

std::vector<OpTime> op_profile_take() {
  std::vector<Timed> ranges;
#if DDPM_WITH_CUDA
  ranges = Recorder::instance().take();
#endif
  {
    std::lock_guard<std::mutex> lock(g_cpu_mu);
    ranges.insert(ranges.end(), g_cpu_ranges.begin(), g_cpu_ranges.end());
    g_cpu_ranges.clear();
  }
  std::vector<OpTime> t = summed(ranges);
  std::sort(t.begin(), t.end(), [](const OpTime& a, const OpTime& b) {
    if (a.ms != b.ms) return a.ms > b.ms;
    return a.name != b.name ? a.name < b.name : a.cpu < b.cpu;
  });
  return t;
}

std::string format_op_profile(const std::vector<OpTime>& times, int64_t steps, int top_shapes) {
  CHECK(steps > 0, "an op profile over " << steps << " steps");
  double sum = 0, calls = 0;
  for (const OpTime& t : times) {
    sum += t.ms / steps;
    calls += static_cast<double>(t.calls) / steps;
  }
  // Which clock: the header names it; in a table of both, the CPU's names say so.
  const auto on_cpu = [](const OpTime& t) { return t.cpu; };
  const bool any_cpu = std::any_of(times.begin(), times.end(), on_cpu);
  const bool all_cpu = !times.empty() && std::all_of(times.begin(), times.end(), on_cpu);
  const auto label = [&](const OpTime& t) {
    return t.cpu && !all_cpu ? t.name + " (CPU)" : t.name;
  };
  const char* header = all_cpu   ? "op (CPU time, wall clock, own)"
                       : any_cpu ? "op (GPU: CUDA events; CPU: wall clock)"
                                 : "op (GPU time, CUDA events)";
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-40s %10s %12s %8s\n", header,
                "calls/step", "ms/step", "share");
  out += line;
  for (const OpTime& t : times) {
    const double ms = t.ms / steps;
    std::snprintf(line, sizeof line, "%-40s %10.1f %12.3f %7.1f%%\n", label(t).c_str(),
                  static_cast<double>(t.calls) / steps, ms, sum > 0 ? 100 * ms / sum : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-40s %10.1f %12.3f %7.1f%%\n", "sum", calls, sum, 100.0);
  out += line;
  // the costliest (op, shape) pairs, across ops
  struct Pair {
    const OpTime* op;
    const OpShapeTime* shape;
  };
  std::vector<Pair> pairs;
  for (const OpTime& t : times)
    for (const OpShapeTime& s : t.shapes) pairs.push_back({&t, &s});
  if (pairs.empty() || top_shapes <= 0) return out;
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const Pair& a, const Pair& b) { return a.shape->ms > b.shape->ms; });
  if (pairs.size() > static_cast<size_t>(top_shapes)) pairs.resize(top_shapes);
  // the op column as wide as its longest name, so that every row's columns line up
  int op_width = 26;
  for (const Pair& p : pairs) op_width = std::max(op_width, static_cast<int>(label(*p.op).size()));
  char wide[320];
  std::snprintf(wide, sizeof wide, "\nthe %zu costliest (op, shape) pairs:\n", pairs.size());
  out += wide;
  std::snprintf(wide, sizeof wide, "%-*s %-44s %8s %10s %7s %7s\n", op_width, "op", "shape",
                "calls", "ms/step", "share", "of op");
  out += wide;
  for (const Pair& p : pairs) {
    const double ms = p.shape->ms / steps;
    std::snprintf(wide, sizeof wide, "%-*s %-44s %8.1f %10.3f %6.1f%% %6.1f%%\n", op_width,
                  label(*p.op).c_str(), p.shape->shape.c_str(),
                  static_cast<double>(p.shape->calls) / steps, ms, sum > 0 ? 100 * ms / sum : 0.0,
                  p.op->ms > 0 ? 100 * p.shape->ms / p.op->ms : 0.0);
    out += wide;
  }
  return out;
}

}  // namespace ddpm
