// kernel-bench's sections run through once (Timer smoke mode: one run per row, batch 1,
// small shapes where the section has them): attention (every engine kernel, the bf16 flash
// pair on bf16 tensors and both cuBLAS floors; the variants the report's cuDNN comparison
// joins on, scripts/attention_reference.py, among them), the convolutions (v1-v4, cuDNN in
// three maths, the engine on cuDNN, bf16 activations; small shapes of the model's kinds of
// layer), the memory-bound kernels, the linear layers through cuBLAS and the fused loss
// against its unfused chain. Every row runs and yields a finite, positive time. On the CPU
// emulation in CI, so a bench row that would fail (a library's refusal, a bad argument)
// fails here and not in a GPU session's few minutes. (step, a whole CIFAR-10 model, is left
// to the GPU.) Skips without a GPU. Figures: none worth reading.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "apps/bench/bench.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

// The rows one section adds, by "kernel / variant" (a count of shapes each), after checking
// that every one has a finite, positive time and a finite rate.
std::map<std::string, int> run_section(void (*section)(const bench::Options&, bench::Timer&,
                                                       bench::Report&)) {
  bench::Options o;
  o.batch = 1;
  o.smoke = true;
  const bench::Peaks peaks = bench::device_peaks();
  bench::Timer timer(peaks.l2_bytes, /*smoke=*/true);
  bench::Report report(peaks);
  section(o, timer, report);
  const nlohmann::json out = report.json();
  std::map<std::string, int> rows;
  for (const auto& r : out["rows"]) {
    const double ms = r["ms"];
    EXPECT_TRUE(std::isfinite(ms) && ms > 0) << r.dump();
    EXPECT_TRUE(std::isfinite(double(r["rate"]))) << r.dump();
    ++rows[std::string(r["kernel"]) + " / " + std::string(r["variant"])];
  }
  return rows;
}

TEST(BenchSmoke, EveryAttentionRowRuns) {
  REQUIRE_GPU();
  std::map<std::string, int> rows = run_section(bench::bench_attention);
  for (const char* variant : {"straightforward", "fused", "flash bf16 (mma.sync)",
                              "flash bf16 (mma.sync), bf16 tensors"})
    for (const char* kernel : {"attention fwd", "attention bwd"})
      EXPECT_EQ(rows[std::string(kernel) + " / " + variant], 2) << kernel << " / " << variant;
  EXPECT_EQ(rows["attention fwd / cuBLAS GEMMs only"], 2);
  EXPECT_EQ(rows["attention fwd / cuBLAS bf16 GEMMs only"], 2);
  EXPECT_EQ(rows.size(), 10u) << "rows other than these ten per shape";
}

TEST(BenchSmoke, EveryConvolutionRowRuns) {
  REQUIRE_GPU();
  const std::map<std::string, int> rows = run_section(bench::bench_convolutions);
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"})
    for (const char* variant : {"v4 bf16, bf16 activations",
                                "engine on cuDNN bf16, bf16 activations (+ glue)"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + variant), 1u) << kernel << " / " << variant;
  EXPECT_GE(rows.size(), 20u) << "a conv section with few rows";
}

TEST(BenchSmoke, EveryMemoryLinearAndLossRowRuns) {
  REQUIRE_GPU();
  for (const auto section : {bench::bench_memory_bound, bench::bench_linear, bench::bench_loss}) {
    const std::map<std::string, int> rows = run_section(section);
    EXPECT_GE(rows.size(), 3u) << "a section that adds almost no rows";
  }
}

}  // namespace
}  // namespace ddpm
