#include "engine/op_profile.h"

#include <algorithm>
#include <atomic>
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
  std::vector<OpTime> take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, OpTime> by_name;
    std::map<std::string, std::map<std::string, OpShapeTime>> by_shape;  // name, shape
    for (const Record& r : records_) {
      CUDA_CHECK(cudaEventSynchronize(r.stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
      OpTime& t = by_name[r.name];
      t.name = r.name;
      ++t.calls;
      t.ms += ms;
      if (!r.shape.empty()) {
        OpShapeTime& s = by_shape[r.name][r.shape];
        s.shape = r.shape;
        ++s.calls;
        s.ms += ms;
      }
      free_.push_back(r.start);
      free_.push_back(r.stop);
    }
    records_.clear();
    std::vector<OpTime> out;
    for (auto& [name, t] : by_name) {
      for (auto& [shape, s] : by_shape[name]) t.shapes.push_back(s);
      std::sort(t.shapes.begin(), t.shapes.end(), [](const OpShapeTime& a, const OpShapeTime& b) {
        return a.ms != b.ms ? a.ms > b.ms : a.shape < b.shape;
      });
      out.push_back(t);
    }
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

void OpShape::enter(std::string shape) {
  outer_ = std::move(g_shape);
  g_shape = std::move(shape);
  active_ = true;
}
OpShape::~OpShape() {
  if (active_) g_shape = std::move(outer_);
}

OpTimer::OpTimer(const char* name, bool on_gpu) {
#if DDPM_WITH_CUDA
  if (on_gpu && g_on) record_ = Recorder::instance().begin(name);
#else
  (void)name;
  (void)on_gpu;
#endif
}

OpTimer::~OpTimer() {
#if DDPM_WITH_CUDA
  if (record_ >= 0) Recorder::instance().end(record_);
#endif
}

std::vector<OpTime> op_profile_take() {
#if DDPM_WITH_CUDA
  std::vector<OpTime> t = Recorder::instance().take();
  std::sort(t.begin(), t.end(), [](const OpTime& a, const OpTime& b) {
    return a.ms != b.ms ? a.ms > b.ms : a.name < b.name;
  });
  return t;
#else
  return {};
#endif
}

std::string format_op_profile(const std::vector<OpTime>& times, int64_t steps, int top_shapes) {
  CHECK(steps > 0, "an op profile over " << steps << " steps");
  double sum = 0, calls = 0;
  for (const OpTime& t : times) {
    sum += t.ms / steps;
    calls += static_cast<double>(t.calls) / steps;
  }
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-40s %10s %12s %8s\n", "op (GPU time, CUDA events)",
                "calls/step", "ms/step", "share");
  out += line;
  for (const OpTime& t : times) {
    const double ms = t.ms / steps;
    std::snprintf(line, sizeof line, "%-40s %10.1f %12.3f %7.1f%%\n", t.name.c_str(),
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
  char wide[320];
  std::snprintf(wide, sizeof wide, "\nthe %zu costliest (op, shape) pairs:\n", pairs.size());
  out += wide;
  std::snprintf(wide, sizeof wide, "%-26s %-44s %8s %10s %7s %7s\n", "op", "shape",
                "calls", "ms/step", "share", "of op");
  out += wide;
  for (const Pair& p : pairs) {
    const double ms = p.shape->ms / steps;
    std::snprintf(wide, sizeof wide, "%-26s %-44s %8.1f %10.3f %6.1f%% %6.1f%%\n",
                  p.op->name.c_str(), p.shape->shape.c_str(),
                  static_cast<double>(p.shape->calls) / steps, ms, sum > 0 ? 100 * ms / sum : 0.0,
                  p.op->ms > 0 ? 100 * p.shape->ms / p.op->ms : 0.0);
    out += wide;
  }
  return out;
}

}  // namespace ddpm
