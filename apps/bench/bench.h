// Shared pieces of kernel-bench (apps/kernel_bench.cpp): the device's peaks, an L2-flushing
// CUDA-event timer, and the report every section adds rows to.
//
// Method: each measurement runs a warm-up, then `reps` timed runs, each preceded by a write
// of a buffer twice the L2 size so no run finds its data in L2; a run is timed with CUDA
// events around the launch(es) alone (host work inside the timed function, e.g. the unfused
// loss chain's syncs, counts too) and the median is reported. Peaks: SMs x clock x FP32
// lanes per SM x 2, tensor-core FLOPs per SM per clock (bench.cpp) x SMs x clock, and memory
// clock x bus width x 2 (DDR), from the device's attributes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"

namespace ddpm::bench {

struct Peaks {
  std::string name;
  double fp32_tflops = 0, bandwidth_gbs = 0;
  // dense tensor-core peaks (no sparsity), by which a TF32 or bf16 variant's rate is judged
  double tf32_tflops = 0, bf16_tflops = 0;
  size_t l2_bytes = 0;
};
Peaks device_peaks();

class Timer {
 public:
  // smoke: every median_ms runs its function once, untimed warm-ups skipped (kernel-bench
  // --smoke and tests/test_bench_smoke.cpp: every row runs, no figure is worth reading).
  explicit Timer(size_t l2_bytes, bool smoke = false);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // Median milliseconds of `fn` over `reps` runs after `warmup` runs, L2 flushed before each.
  double median_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20);

 private:
  void* flush_ = nullptr;
  size_t flush_bytes_;
  bool smoke_;
  cudaEvent_t start_, stop_;
};

struct Row {
  std::string kernel, shape, variant;
  double ms = 0, rate = 0, fraction = 0;  // rate: TFLOP/s or GB/s
  const char* unit = "";
  nlohmann::json extra = nlohmann::json::object();  // section-specific figures
};

// The rows of one run, printed as a table and written as JSON.
class Report {
 public:
  explicit Report(const Peaks& peaks) : peaks_(peaks) {}
  // Each add returns the new row, valid until the next add (the rows may move then).
  // flops / ms as TFLOP/s and the fraction of the peak of the variant's arithmetic (its name
  // says "bf16" or "TF32" for tensor cores; FP32 FMA otherwise).
  Row& add_flops(const std::string& kernel, const std::string& shape, const std::string& variant,
                 double ms, double flops);
  // bytes / ms as GB/s and the fraction of peak bandwidth.
  Row& add_bytes(const std::string& kernel, const std::string& shape, const std::string& variant,
                 double ms, double bytes);
  // A rate of the section's own unit (e.g. images per second), with no peak to judge it by.
  Row& add_rate(const std::string& kernel, const std::string& shape, const std::string& variant,
                double ms, double rate, const char* unit);
  void print(size_t first_row = 0) const;  // the table of rows first_row, ...
  nlohmann::json json() const;
  const Peaks& peaks() const { return peaks_; }
  size_t size() const { return rows_.size(); }

 private:
  Peaks peaks_;
  std::vector<Row> rows_;
};

// Rows on Hopper's wgmma and TMA kernels (sm_90a: convolution v5, the wgmma GEMM, the step
// on v5), the others, or both (--only-sm90, --without-sm90). A kernel's trap on a GPU ends
// the process's CUDA context and every row after it, so scripts/gpu-check.sh times the rest
// first and the Hopper rows, the newest kernels, in a process of their own.
enum class Sm90Rows { Both, Without, Only };

struct Options {
  int64_t batch = 128;
  bool skip_naive = false;
  bool smoke = false;  // small shapes where a section has them, one run per row (Timer)
  Sm90Rows sm90 = Sm90Rows::Both;
  // Whether rows of this kind are wanted: on the Hopper kernels (which also need
  // cuda::gemm_sm90_available()) or not.
  bool wants(bool sm90_rows) const {
    return sm90_rows ? sm90 != Sm90Rows::Without : sm90 != Sm90Rows::Only;
  }
};

// The bits of a bf16 tensor, as the kernels' bf16 entries take them.
inline uint16_t* bf16_bits(const Tensor& t) { return reinterpret_cast<uint16_t*>(t.raw()); }

// The sections; each adds its rows.
void bench_convolutions(const Options& o, Timer& timer, Report& report);
// Part of the conv section: the upsampling layers, upsample then conv against by phase.
void bench_upsample_convolutions(const Options& o, Timer& timer, Report& report);
void bench_memory_bound(const Options& o, Timer& timer, Report& report);
void bench_attention(const Options& o, Timer& timer, Report& report);
void bench_loss(const Options& o, Timer& timer, Report& report);
void bench_linear(const Options& o, Timer& timer, Report& report);
void bench_gemm(const Options& o, Timer& timer, Report& report);
void bench_training_step(const Options& o, Timer& timer, Report& report);

struct Section {
  const char* name;
  void (*run)(const Options&, Timer&, Report&);
};
// Runs the sections in order. A section that throws is named (on stderr, and under
// "failed_sections" in the JSON) and the others still run: one broken row must not cost a
// GPU session the rest of its figures. After each section its rows are printed and the JSON
// of every row so far is written to json_path (when not empty; atomically, with "complete":
// false until the last section), so a run stopped at a time limit keeps what it finished.
// Returns whether every section ran through.
bool run_sections(const std::vector<Section>& sections, const Options& o, Timer& timer,
                  Report& report, const std::string& json_path);

}  // namespace ddpm::bench
