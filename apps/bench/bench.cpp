#include "apps/bench/bench.h"

#include <algorithm>
#include <cstdio>

#include "engine/cuda_check.h"
#include "engine/file_io.h"

namespace ddpm::bench {

Peaks device_peaks() {
  int dev = 0, clock_khz = 0, mem_clock_khz = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, dev));
  // FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86/89/90 and later.
  const int lanes = (prop.major == 8 && prop.minor == 0) ? 64 : 128;
  Peaks p;
  p.name = prop.name;
  p.fp32_tflops = 2.0 * prop.multiProcessorCount * lanes * clock_khz * 1e3 / 1e12;
  // Dense tensor-core FLOPs per SM per clock for bf16 (TF32: half): 2048 on sm_80 (A100's
  // 312 TFLOP/s), 4096 on sm_90 (H100/H200's 989 TFLOP/s, reached by wgmma; mma.sync, which
  // v4 uses, is known to top out below it), 1024 on the consumer parts (sm_86/89, approximate).
  const int tc_bf16 = prop.major == 9 ? 4096 : (prop.major == 8 && prop.minor == 0) ? 2048 : 1024;
  p.bf16_tflops = 1.0 * prop.multiProcessorCount * tc_bf16 * clock_khz * 1e3 / 1e12;
  p.tf32_tflops = p.bf16_tflops / 2;
  p.bandwidth_gbs = 2.0 * mem_clock_khz * 1e3 * (prop.memoryBusWidth / 8) / 1e9;
  p.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  return p;
}

Timer::Timer(size_t l2_bytes, bool smoke)
    : flush_bytes_(2 * std::max<size_t>(l2_bytes, 1 << 20)), smoke_(smoke) {
  CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
  CUDA_CHECK(cudaEventCreate(&start_));
  CUDA_CHECK(cudaEventCreate(&stop_));
}

Timer::~Timer() {
  cudaFree(flush_);
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
}

double Timer::median_ms(const std::function<void()>& fn, int warmup, int reps) {
  if (smoke_) warmup = 0, reps = 1;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> ms;
  // On the legacy default stream: the engine's stream is a blocking one (engine/cuda_stream.h),
  // so these events order with its kernels and with the baselines' default-stream calls alike.
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaMemsetAsync(flush_, i, flush_bytes_, 0));
    CUDA_CHECK(cudaEventRecord(start_, 0));
    fn();
    CUDA_CHECK(cudaEventRecord(stop_, 0));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start_, stop_));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Row& Report::add_flops(const std::string& kernel, const std::string& shape,
                       const std::string& variant, double ms, double flops) {
  const double tflops = flops / ms / 1e9;
  // the peak of the arithmetic the variant uses: bf16 or TF32 tensor cores, else FP32 FMA
  // (TF32 first: the TF32 convolution on bf16 pieces is measured against TF32's peak, the
  // math it gives, as cuDNN TF32 is; fp32 on bf16x6 against fp32's, as cuDNN fp32 is, so
  // its fraction may pass 1: faster than FMA can be)
  const bool fp32_on_bf16 = variant.find("fp32 on bf16x6") != std::string::npos;
  const double peak = variant.find("TF32") != std::string::npos   ? peaks_.tf32_tflops
                      : fp32_on_bf16                              ? peaks_.fp32_tflops
                      : variant.find("bf16") != std::string::npos ? peaks_.bf16_tflops
                                                                  : peaks_.fp32_tflops;
  rows_.push_back({kernel, shape, variant, ms, tflops, tflops / peak, "TFLOP/s"});
  return rows_.back();
}

Row& Report::add_bytes(const std::string& kernel, const std::string& shape,
                       const std::string& variant, double ms, double bytes) {
  const double gbs = bytes / ms / 1e6;
  rows_.push_back({kernel, shape, variant, ms, gbs, gbs / peaks_.bandwidth_gbs, "GB/s"});
  return rows_.back();
}

Row& Report::add_rate(const std::string& kernel, const std::string& shape,
                      const std::string& variant, double ms, double rate, const char* unit) {
  rows_.push_back({kernel, shape, variant, ms, rate, 0.0, unit});
  return rows_.back();
}

void Report::print(size_t first_row) const {
  std::printf("\n%-22s %-30s %-26s %10s %12s %8s\n", "kernel", "shape", "variant", "ms", "rate",
              "peak");
  for (size_t i = first_row; i < rows_.size(); ++i) {
    const Row& r = rows_[i];
    std::printf("%-22s %-30s %-26s %10.4f %8.2f %-7s %5.1f%%\n", r.kernel.c_str(),
                r.shape.c_str(), r.variant.c_str(), r.ms, r.rate, r.unit, 100 * r.fraction);
  }
  std::fflush(stdout);
}

nlohmann::json Report::json() const {
  nlohmann::json out = {{"device", peaks_.name},
                        {"fp32_peak_tflops", peaks_.fp32_tflops},
                        {"tf32_peak_tflops", peaks_.tf32_tflops},
                        {"bf16_peak_tflops", peaks_.bf16_tflops},
                        {"bandwidth_peak_gbs", peaks_.bandwidth_gbs},
                        {"rows", nlohmann::json::array()}};
  for (const Row& r : rows_) {
    nlohmann::json row = {{"kernel", r.kernel}, {"shape", r.shape}, {"variant", r.variant},
                          {"ms", r.ms},         {"rate", r.rate},   {"unit", r.unit},
                          {"fraction_of_peak", r.fraction}};
    row.update(r.extra);
    out["rows"].push_back(row);
  }
  return out;
}

bool run_sections(const std::vector<Section>& sections, const Options& o, Timer& timer,
                  Report& report, const std::string& json_path) {
  nlohmann::json failed = nlohmann::json::object();
  for (size_t i = 0; i < sections.size(); ++i) {
    const size_t first_row = report.size();
    try {
      sections[i].run(o, timer, report);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kernel-bench: section %s failed: %s\n", sections[i].name, e.what());
      failed[sections[i].name] = e.what();
    }
    if (report.size() > first_row) report.print(first_row);
    if (json_path.empty()) continue;
    nlohmann::json out = report.json();
    out["batch"] = o.batch;
    out["complete"] = i + 1 == sections.size();
    if (!failed.empty()) out["failed_sections"] = failed;
    write_file_atomic(json_path, out.dump(2) + "\n");
  }
  return failed.empty();
}

}  // namespace ddpm::bench
