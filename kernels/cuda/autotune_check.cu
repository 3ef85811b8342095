// The autotuners' check and timing of their candidates (autotune_check.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <type_traits>
#include <utility>

#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda::autotune {

namespace {

__device__ __forceinline__ bool finite(float v) {
  return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

// maxima[2 g] = max |got - want| over group g's elements and maxima[2 g + 1] = max |want|,
// as the bits of non-negative floats (ordered as unsigned integers, so that atomicMax on
// them is the max of the floats); maxima zeroed before. A thread keeps its own per group,
// the warp reduces them by shuffles, then one atomic a warp and value. A launch of full
// warps (kThreads), every lane at the shuffles.
template <Compare kCompare>
__global__ void compare_kernel(int64_t n, int64_t row, int groups, const void* want,
                               const void* got, unsigned* maxima) {
  float diff[kMaxGroups] = {}, scale[kMaxGroups] = {};
  const int64_t group_width = row / groups;
  DDPM_GRID_STRIDE(i, n) {
    const int g = groups == 1 ? 0 : static_cast<int>(i % row / group_width);
    float d = 0.0f, s = 0.0f;
    if constexpr (kCompare == Compare::Bits) {
      const uint32_t a = static_cast<const uint32_t*>(want)[i];
      d = a == static_cast<const uint32_t*>(got)[i] ? 0.0f : INFINITY;
    } else {
      using T = std::conditional_t<kCompare == Compare::Bf16, uint16_t, float>;
      const float a = load(static_cast<const T*>(want), i);
      const float b = load(static_cast<const T*>(got), i);
      d = finite(a) && finite(b) ? fabsf(a - b) : INFINITY;
      s = finite(a) ? fabsf(a) : 0.0f;
    }
    diff[g] = fmaxf(diff[g], d);
    scale[g] = fmaxf(scale[g], s);
  }
  for (int g = 0; g < groups; ++g) {
    diff[g] = warp_max(diff[g]);
    scale[g] = warp_max(scale[g]);
    if (threadIdx.x % 32 == 0) {
      atomicMax(maxima + 2 * g, __float_as_uint(diff[g]));
      atomicMax(maxima + 2 * g + 1, __float_as_uint(scale[g]));
    }
  }
}

size_t bytes(const Output& o) {
  return static_cast<size_t>(o.n) * (o.compare == Compare::Bf16 ? 2 : 4);
}

}  // namespace

Check::Check(std::vector<Output> outputs) : outputs_(std::move(outputs)) {
  for (const Output& o : outputs_) {
    CHECK(o.n >= 0 && o.row >= 1 && o.groups >= 1 && o.groups <= kMaxGroups &&
              o.row % o.groups == 0 && o.n % o.row == 0,
          "autotune check: an output of " << o.n << " elements in rows of " << o.row
                                          << " cannot be cut into " << o.groups
                                          << " column groups (at most " << kMaxGroups << ")");
    void* copy = nullptr;
    if (o.n > 0) CUDA_CHECK(cudaMalloc(&copy, bytes(o)));
    reference_.push_back(copy);
  }
  CUDA_CHECK(cudaMalloc(&maxima_, 2 * kMaxGroups * sizeof(unsigned)));
}

Check::~Check() {
  for (void* p : reference_) cudaFree(p);
  cudaFree(maxima_);
}

void Check::poison() const {
  for (const Output& o : outputs_)
    CUDA_CHECK(cudaMemsetAsync(o.p, 0xFF, bytes(o), engine_stream()));
}

void Check::keep_as_reference() const {
  for (size_t i = 0; i < outputs_.size(); ++i)
    CUDA_CHECK(cudaMemcpyAsync(reference_[i], outputs_[i].p, bytes(outputs_[i]),
                               cudaMemcpyDeviceToDevice, engine_stream()));
}

double Check::error() const {
  double worst = 0.0;
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const Output& o = outputs_[i];
    if (o.n == 0) continue;
    CUDA_CHECK(cudaMemsetAsync(maxima_, 0, 2 * kMaxGroups * sizeof(unsigned), engine_stream()));
    // 8 blocks an SM at most: one atomic a warp, and few warps, not one atomic an element
    const unsigned grid = grid_for(o.n, 8 * static_cast<int64_t>(sm_count()));
    const void* want = reference_[i];
    if (o.compare == Compare::Bits)
      DDPM_LAUNCH(compare_kernel<Compare::Bits>, grid, kThreads)(o.n, o.row, o.groups, want, o.p,
                                                                 maxima_);
    else if (o.compare == Compare::Bf16)
      DDPM_LAUNCH(compare_kernel<Compare::Bf16>, grid, kThreads)(o.n, o.row, o.groups, want, o.p,
                                                                 maxima_);
    else
      DDPM_LAUNCH(compare_kernel<Compare::F32>, grid, kThreads)(o.n, o.row, o.groups, want, o.p,
                                                                maxima_);
    float maxima[2 * kMaxGroups] = {};  // the floats whose bits the kernel kept
    CUDA_CHECK(cudaMemcpyAsync(maxima, maxima_, sizeof maxima, cudaMemcpyDeviceToHost,
                               engine_stream()));
    CUDA_CHECK(cudaStreamSynchronize(engine_stream()));
    for (int g = 0; g < o.groups; ++g) {
      const double diff = maxima[2 * g], scale = maxima[2 * g + 1];
      worst = std::max(worst, diff == 0.0 ? 0.0 : scale > 0.0 ? diff / scale : INFINITY);
    }
  }
  return worst;
}

std::vector<Timing> check_and_time(size_t count, const Check& check, double bound,
                                   const std::function<void(size_t)>& run) {
  cudaEvent_t start = nullptr, end = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&end));
  const auto timed_run = [&](size_t i) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventRecord(start, engine_stream()));
    run(i);
    CUDA_CHECK(cudaEventRecord(end, engine_stream()));
    CUDA_CHECK(cudaEventSynchronize(end));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
    return static_cast<double>(ms);
  };
  std::vector<Timing> timings(count);
  for (size_t i = 0; i < count; ++i) {
    Timing& t = timings[i];
    check.poison();
    const double checked_ms = timed_run(i);
    if (i == 0) check.keep_as_reference();
    // the reference against itself: 0, or infinite if not finite, and then so is every
    // other candidate's error against it
    t.error = check.error();
    t.kept = t.error <= bound;
    if (!t.kept) continue;
    std::vector<double> ms;
    for (int r = 0; r < kAutotuneTimedRuns; ++r)
      ms.push_back(kAutotuneWarmUps == 0 && r == 0 ? checked_ms : timed_run(i));
    std::sort(ms.begin(), ms.end());
    t.ms = ms[ms.size() / 2];
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(end));
  if (count > 0 && !timings[0].kept) timings[0].kept = true;  // nothing else was kept
  return timings;
}

size_t print_and_pick(const std::vector<const char*>& names, const std::vector<Timing>& timings,
                      double bound, const char* note) {
  size_t best = 0;
  for (size_t i = 0; i < timings.size(); ++i) {
    const Timing& t = timings[i];
    std::printf("%s %s", i ? "," : "", names[i]);
    if (t.kept && t.error > bound)  // the reference, not finite
      std::printf(" kept untimed (its output is not finite: nothing to check the others by)");
    else if (t.kept && t.error > 0.0)  // how far from the reference (the same sums otherwise)
      std::printf(" %.3f ms (off by %.1e of the largest)", t.ms, t.error);
    else if (t.kept)
      std::printf(" %.3f ms", t.ms);
    else if (std::isfinite(t.error))
      std::printf(" left out (error %.2g of the largest value, bound %.2g)", t.error, bound);
    else
      std::printf(" left out (its output is not finite, or not the reference's bits)");
    if (t.kept && t.ms < timings[best].ms) best = i;
  }
  std::printf("%s -> %s\n", note, names[best]);
  return best;
}

}  // namespace ddpm::cuda::autotune
