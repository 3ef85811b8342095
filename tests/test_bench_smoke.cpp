// kernel-bench's sections run through once (Timer smoke mode: one run per row, batch 1,
// small shapes where the section has them; the sections with rows on Hopper's kernels in
// two runs, without them and with only them, as scripts/gpu-check.sh runs them): attention
// (every engine kernel, the bf16 flash pair on bf16 tensors and both cuBLAS floors; the
// variants the report's cuDNN comparison joins on, scripts/attention_reference.py, among
// them), the convolutions (v1-v5, the direct kernels for few output channels, cuDNN in
// three maths, the engine on cuDNN, bf16 activations; small shapes of the model's kinds of
// layer), the memory-bound kernels, the
// linear layers through cuBLAS, the Hopper wgmma GEMM beside cuBLAS's, and the fused loss
// against its unfused chain. Every row runs and yields a finite, positive time. On the CPU
// emulation in CI, so a bench row that would fail (a library's refusal, a bad argument)
// fails here and not in a GPU session's few minutes. And the training step's variants (fp32
// and bf16, eager and as a CUDA graph, on our convolutions and cuDNN's, bf16 activations,
// without the weights' copy, on v5) on a small U-Net of every layer kind: each row runs,
// and says what the host issued for a step (a graph row: one graph launch, no kernel launch
// and no memset; every row: one host wait, for the step's summary; without the weights'
// copy: more launches, the conversions of w).
// Skips without a GPU. Figures: none worth reading.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/file_io.h"
#include "kernels/cuda/gemm_sm90.cuh"
#include "tests/test_util.h"

namespace ddpm {
namespace {

// The rows one section adds, by "kernel / variant" (a count of shapes each), after checking
// that every one has a finite, positive time and a finite rate.
using Section = void (*)(const bench::Options&, bench::Timer&, bench::Report&);

std::map<std::string, int> run_section(Section section, nlohmann::json* rows_out = nullptr,
                                       bench::Sm90Rows sm90 = bench::Sm90Rows::Both) {
  bench::Options o;
  o.batch = 1;
  o.smoke = true;
  o.sm90 = sm90;
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
  if (rows_out) *rows_out = out["rows"];
  return rows;
}

// A section run as scripts/gpu-check.sh runs kernel-bench: every row but those on Hopper's
// kernels (--without-sm90), then only those (--only-sm90), in two runs. Checks that the
// first has no row on them and the second nothing else (their variants name "wgmma"), and
// returns both runs' rows.
std::map<std::string, int> run_split(Section section, nlohmann::json* rows_out = nullptr) {
  nlohmann::json without, only;
  std::map<std::string, int> rows = run_section(section, &without, bench::Sm90Rows::Without);
  const std::map<std::string, int> hopper = run_section(section, &only, bench::Sm90Rows::Only);
  auto on_hopper = [](const nlohmann::json& r) {
    return std::string(r["variant"]).find("wgmma") != std::string::npos;
  };
  for (const auto& r : without) EXPECT_FALSE(on_hopper(r)) << "--without-sm90: " << r.dump();
  for (const auto& r : only) EXPECT_TRUE(on_hopper(r)) << "--only-sm90: " << r.dump();
  for (const auto& [name, count] : hopper) rows[name] += count;
  if (rows_out) {
    *rows_out = without;
    for (const auto& r : only) rows_out->push_back(r);
  }
  return rows;
}

TEST(BenchSmoke, EveryAttentionRowRuns) {
  REQUIRE_GPU();
  std::map<std::string, int> rows = run_split(bench::bench_attention);
  // the pair on wgmma where the device has it (the smoke shapes: heads of 256 and 32, so
  // one of the two shapes)
  const int wgmma = cuda::gemm_sm90_available() ? 1 : 0;
  EXPECT_EQ(rows["attention fwd / flash bf16 (wgmma), bf16 tensors"], wgmma);
  EXPECT_EQ(rows["attention bwd / flash bf16 (wgmma), bf16 tensors"], wgmma);
  for (const char* variant : {"straightforward", "fused", "flash bf16 (mma.sync)",
                              "flash bf16 (mma.sync), bf16 tensors"})
    for (const char* kernel : {"attention fwd", "attention bwd"})
      EXPECT_EQ(rows[std::string(kernel) + " / " + variant], 2) << kernel << " / " << variant;
  EXPECT_EQ(rows["attention bwd / flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS"], 2);
  for (const char* kernel : {"attention fwd", "attention bwd"})
    for (const char* variant : {"bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors",
                                "fp32 GEMMs (cuBLAS) and row kernels",
                                "fp32 GEMMs (cuBLAS) and row kernels, P recomputed by chunks"})
      EXPECT_EQ(rows[std::string(kernel) + " / " + variant], 2) << kernel << " / " << variant;
  EXPECT_EQ(rows["attention fwd / cuBLAS GEMMs only"], 2);
  EXPECT_EQ(rows["attention fwd / cuBLAS bf16 GEMMs only"], 2);
  EXPECT_EQ(rows.size(), 17u + 2 * wgmma) << "rows other than these per shape";
}

TEST(BenchSmoke, EveryConvolutionRowRuns) {
  REQUIRE_GPU();
  const std::map<std::string, int> rows = run_split(bench::bench_convolutions);
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"})
    for (const char* variant : {"v4 bf16, bf16 activations",
                                "engine on cuDNN bf16, bf16 activations (+ glue)"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + variant), 1u)
          << kernel << " / " << variant;
  // cuDNN alone at its fastest too, in each math, a row wherever its heuristics' row is:
  // every algorithm that runs timed (conv_bench.cpp)
  for (const std::string kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"}) {
    const auto count = [&](const std::string& name) {
      const auto found = rows.find(kernel + " / " + name);
      return found == rows.end() ? 0 : found->second;
    };
    for (const std::string math : {"cuDNN fp32", "cuDNN TF32", "cuDNN bf16"}) {
      EXPECT_GT(count(math), 0) << kernel << " / " << math;
      EXPECT_EQ(count(math + ", fastest algorithm"), count(math)) << kernel << " / " << math;
    }
  }
  // with the weights' copy as training reads it: fwd and dgrad (the wgrad reads no weights)
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
    for (const char* variant : {"v4 bf16, bf16 activations and weight copy",
                                "engine on cuDNN bf16, bf16 activations and weight copy (+ glue)"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + variant), 1u)
          << kernel << " / " << variant;
  EXPECT_EQ(rows.count("conv2d wgrad / v4 bf16, bf16 activations and weight copy"), 0u);
  // and with the three passes' gathers in L2 only
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"})
    EXPECT_EQ(rows.count(std::string(kernel) + " / v4 bf16, gathers in L2 only, bf16 activations"),
              1u)
        << kernel;
  // v4 again on 64x64 warp tiles, in 128x128 and in 256x128 blocks, the same three and two
  // rows
  for (const char* tiles : {"v4 bf16 (64x64 warps)", "v4 bf16 (256x128 tiles)"}) {
    for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + tiles + ", bf16 activations"), 1u)
          << kernel << " / " << tiles;
    for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + tiles +
                           ", bf16 activations and weight copy"),
                1u)
          << kernel << " / " << tiles;
  }
  // v5 where it runs (the emulation too): its forward and dgrad on the weights' copy, its
  // wgrad (which reads no weights), in both rings and on tall tiles; the forward and the
  // wgrad again with B by the copy engine (the dgrad's too where Cout is a multiple of 64: no
  // smoke shape's is)
  const unsigned v5 = cuda::gemm_sm90_available() ? 1u : 0u;
  for (const char* ring :
       {"v5 wgmma, ", "v5 wgmma, 2 blocks an SM, ", "v5 wgmma, 256x128 tiles, "}) {
    for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + ring +
                           "bf16 activations and weight copy"),
                v5)
          << kernel << ring;
    EXPECT_EQ(rows.count(std::string("conv2d wgrad / ") + ring + "bf16 activations"), v5) << ring;
  }
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
    EXPECT_EQ(rows.count(std::string(kernel) +
                         " / v5 wgmma, gathers in L2 only, bf16 activations and weight copy"),
              v5)
        << kernel;
  EXPECT_EQ(rows.count("conv2d wgrad / v5 wgmma, gathers in L2 only, bf16 activations"), v5);
  EXPECT_EQ(rows.count("conv2d fwd / v5 wgmma, TMA B, bf16 activations and weight copy"), v5);
  EXPECT_EQ(rows.count("conv2d wgrad / v5 wgmma, TMA B, bf16 activations"), v5);
  EXPECT_EQ(rows.count("conv2d dgrad / v5 wgmma, TMA B, bf16 activations and weight copy"), 0u);
  // nor the im2col copy's rows, which need Cin (forward, wgrad) or Cout (dgrad) a multiple
  // of 64
  for (const char* loop : {"", "plain loop, "}) {
    const std::string im2col = std::string(" / v5 wgmma, TMA B, im2col A, ") + loop;
    for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
      EXPECT_EQ(rows.count(kernel + im2col + "bf16 activations and weight copy"), 0u) << kernel;
    EXPECT_EQ(rows.count("conv2d wgrad" + im2col + "bf16 activations"), 0u) << loop;
  }
  EXPECT_EQ(rows.count("conv2d wgrad / v5 wgmma, bf16 activations and weight copy"), 0u);
  // the direct kernels for few output channels, on the one smoke shape they take (16 -> 3),
  // where v4's rows above time the GEMM on all three
  auto shapes = [&](const std::string& row) {
    const auto it = rows.find(row);
    return it == rows.end() ? 0 : it->second;
  };
  // v2 on either tile, as it runs and element by element, TF32 on v4's GEMM, and with every
  // pass on bf16 pieces, and fp32 on three bf16 pieces, on every smoke shape
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"})
    for (const char* variant :
         {" / v2 tiled (64x64 tiles)", " / v2 tiled (128x128 tiles)", " / v2 tiled",
          " / v2 tiled, element by element", " / v4 TF32",
          " / v4 TF32, every pass on bf16 pieces", " / v4 fp32 on bf16x6"})
      EXPECT_EQ(shapes(kernel + std::string(variant)), 3) << kernel << variant;
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad", "conv2d wgrad"}) {
    EXPECT_EQ(shapes(std::string(kernel) + " / direct (few outputs), bf16 activations"), 1)
        << kernel;
    EXPECT_EQ(shapes(std::string(kernel) + " / v4 bf16, bf16 activations"), 3) << kernel;
  }
  for (const char* kernel : {"conv2d fwd", "conv2d dgrad"})
    EXPECT_EQ(shapes(std::string(kernel) +
                     " / direct (few outputs), bf16 activations and weight copy"),
              1)
        << kernel;
  EXPECT_EQ(shapes("conv2d wgrad / direct (few outputs), bf16 activations and weight copy"), 0);
  // the upsamplers, both ways, forward and with the backward
  for (const char* kernel : {"upsample+conv fwd", "upsample+conv fwd+bwd"})
    for (const char* way : {"upsample, then conv (v4 bf16, bf16 activations)",
                            "by phase (v4 bf16, bf16 activations)"})
      EXPECT_EQ(rows.count(std::string(kernel) + " / " + way), 1u) << kernel << " / " << way;
  EXPECT_GE(rows.size(), 20u) << "a conv section with few rows";
}

TEST(BenchSmoke, EveryMemoryLinearAndLossRowRuns) {
  REQUIRE_GPU();
  for (const auto section : {bench::bench_memory_bound, bench::bench_linear, bench::bench_loss}) {
    const std::map<std::string, int> rows = run_section(section);
    EXPECT_GE(rows.size(), 3u) << "a section that adds almost no rows";
    if (section == bench::bench_loss) {  // the smoke shape's mapping (one quad) and the other
      for (const char* row :
           {"loss fwd+bwd / fused", "loss fwd+bwd / fused, two quads a thread",
            "corrupt / fused f32 x0", "corrupt / fused f32 x0, two quads a thread"})
        EXPECT_EQ(rows.count(row), 1u) << row;
    }
    if (section == bench::bench_linear) {  // each forward with its bias by a pass, and not
      for (const std::string way : {"SGEMM fp32", "SGEMM TF32 (+ rounding)",
                                    "GemmEx bf16 (+ conversion)", "GemmEx bf16, bf16 activations"})
        for (const std::string bias : {"", ", bias in cuBLASLt's epilogue"})
          EXPECT_EQ(rows.count("linear fwd / " + way + bias), 1u) << way << bias;
    }
    if (section != bench::bench_memory_bound) continue;
    // group norm in every mapping onto blocks, in f32 and bf16 storage
    for (const std::string mapping :
         {"block per group", "channel slab", "channel runs", "slab in registers"}) {
      for (const char* kernel : {"group_norm fwd", "group_norm bwd (dx)", "group_norm+silu fwd"})
        EXPECT_EQ(rows.count(kernel + (" / " + mapping)), 1u) << kernel << " / " << mapping;
      for (const char* kernel : {"group_norm bwd (dx)", "group_norm+silu fwd"})
        EXPECT_EQ(rows.count(kernel + (" / " + mapping + ", bf16 storage")), 1u)
            << kernel << " / " << mapping << ", bf16 storage";
    }
    for (const char* row : {"group_norm+silu bwd / dh pass, then dx pass, bf16 storage",
                            "group_norm+silu bwd / fused (dh recomputed), bf16 storage",
                            "group_norm+silu+dropout bwd / dh pass, then dx pass, bf16 storage",
                            "group_norm+silu+dropout bwd / fused (mask regenerated), bf16 storage",
                            "broadcast add (per sample) / float4 words",
                            "upsample 2x fwd / thread per input, 2x2 block",
                            "concat (skip) / 16-byte words",
                            "concat (skip) / 16-byte words, bf16 storage",
                            "interleave phases / 16-byte words, bf16 storage"})
      EXPECT_EQ(rows.count(row), 1u) << row;
  }
}

// cuBLAS's bf16 GEMM always, in both layouts; the wgmma GEMM likewise where it can run (sm_90
// with sm_90a code, and the emulation), one small case in smoke mode.
TEST(BenchSmoke, EveryGemmRowRuns) {
  REQUIRE_GPU();
  const std::map<std::string, int> rows = run_split(bench::bench_gemm);
  const unsigned wgmma = cuda::gemm_sm90_available() ? 1u : 0u;
  EXPECT_EQ(rows.count("gemm / cuBLAS bf16 (GemmEx, TN)"), 1u);
  EXPECT_EQ(rows.count("gemm / cuBLAS bf16 (GemmEx, NT)"), 1u);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 4 stages)"), wgmma);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 4 stages), both MN-major"), wgmma);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 4 stages, TMA loads)"), wgmma);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 4 stages, TMA loads), both MN-major"),
            wgmma);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA)"),
            wgmma);
  EXPECT_EQ(rows.count(
                "gemm / wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA), both MN-major"),
            wgmma);
  EXPECT_EQ(rows.count("gemm / wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM)"),
            wgmma);
  EXPECT_EQ(
      rows.count(
          "gemm / wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM), both MN-major"),
      wgmma);
}

// The step's rows, by variant. Eager rows: kernels launched one by one, no graph, one
// memset; graph rows: the step is one graph launch (the capture happened before any row was taken). Each
// with the matrix-product FLOPs of an eager step (MFU) and a peak of GPU memory.
TEST(BenchSmoke, EveryTrainingStepRowRuns) {
  REQUIRE_GPU();
  nlohmann::json rows;
  testing::internal::CaptureStdout();
  const std::map<std::string, int> names = run_split(bench::bench_training_step, &rows);
  const std::string printed = testing::internal::GetCapturedStdout();
  // the rows with cuDNN's algorithms timed time them, in both maths (their plans' lines)
  for (const char* math : {" fp32: algo ", " bf16: algo "})
    EXPECT_NE(printed.find(std::string("cudnn benchmark: forward (") + "1, 32, 32, 3) k3x3 -> 8 "
                           "stride 1 pad 1,1,1,1" + math),
              std::string::npos)
        << math;
  // eager and graph on wgmma, and eager with v5's schedules autotuned
  const size_t v5 = cuda::gemm_sm90_available() ? 1 : 0;
  EXPECT_EQ(names.size(), 20u + 5 * v5);
  for (const std::string graph : {"eager ", "CUDA graph "})
    for (const std::string im2col : {"", ", im2col A (forced)"})
      EXPECT_EQ(names.count("training step / " + graph +
                            "bf16, bf16 activations, v5 wgmma convolutions" + im2col),
                v5)
          << graph << im2col;
  EXPECT_EQ(names.count("training step / eager bf16, bf16 activations, v5 wgmma convolutions, "
                        "autotuned"),
            v5);
  for (const std::string graph : {"eager ", "CUDA graph "}) {
    for (const std::string precision : {"fp32", "bf16"})
      for (const std::string cudnn : {"", ", cuDNN convolutions"})
        EXPECT_EQ(names.count("training step / " + graph + precision + cudnn), 1u)
            << graph << precision << cudnn;
    EXPECT_EQ(names.count("training step / " + graph + "bf16, bf16 activations"), 1u) << graph;
  }
  EXPECT_EQ(names.count("training step / eager bf16, bf16 activations, no weight copy"), 1u);
  EXPECT_EQ(names.count("training step / eager tf32"), 1u);
  EXPECT_EQ(names.count("training step / eager tf32, cuDNN convolutions"), 1u);
  EXPECT_EQ(names.count("training step / eager fp32, v4 bf16x6 convolutions"), 1u);
  EXPECT_EQ(names.count("training step / eager bf16, bf16 activations, upsample then conv"), 1u);
  EXPECT_EQ(names.count("training step / eager bf16, cuDNN convolutions, bf16 activations"), 1u);
  // and the two cuDNN steps with cuDNN's algorithms timed (cuda_autotune), beside them
  EXPECT_EQ(names.count("training step / eager fp32, cuDNN convolutions, cuDNN's algorithms "
                        "timed"),
            1u);
  EXPECT_EQ(names.count("training step / eager bf16, cuDNN convolutions, bf16 activations, "
                        "cuDNN's algorithms timed"),
            1u);
  for (const std::string graph : {"eager ", "CUDA graph "})
    EXPECT_EQ(names.count("training step / " + graph +
                          "bf16, v4 or cuDNN per layer (auto), bf16 activations"),
              1u)
        << graph;
  std::map<std::string, int64_t> launches;
  for (const auto& r : rows) {
    const std::string variant = r["variant"];
    const bool graph = variant.rfind("CUDA graph", 0) == 0;
    launches[variant] = r["kernel_launches"];
    EXPECT_EQ(int64_t(r["graph_launches"]), graph ? 1 : 0) << variant;
    if (graph) {
      EXPECT_EQ(int64_t(r["kernel_launches"]), 0) << variant;
      EXPECT_EQ(int64_t(r["memsets"]), 0) << variant;
    } else {
      EXPECT_GT(int64_t(r["kernel_launches"]), 50) << variant;
      // the parameters' flat gradient buffer: every activation gradient is written outright
      EXPECT_EQ(int64_t(r["memsets"]), 1) << variant;
    }
    // the host's one wait: ImageRun::step resolves the step it queued (its summary read)
    EXPECT_EQ(int64_t(r["host_syncs"]), 1) << variant;
    EXPECT_GT(double(r["step_tflop"]), 0.0) << variant;
    EXPECT_TRUE(std::isfinite(double(r["mfu"])) && double(r["mfu"]) > 0) << variant;
    EXPECT_GT(double(r["peak_gib"]), 0.0) << variant;
  }
  // the weights' bf16 copy spares every bf16 product its conversion of w
  EXPECT_GT(launches["eager bf16, bf16 activations, no weight copy"],
            launches["eager bf16, bf16 activations"]);
}

// kernel-bench's loop over its sections (bench::run_sections): after each section the JSON
// on disk holds every row so far, "complete": false until the last, so a run stopped at a
// time limit keeps the sections it finished; a failing section is named there and the next
// still runs. (Fake sections: the loop, not the kernels.)
std::string g_sections_json;

nlohmann::json sections_json_on_disk() {
  const std::vector<uint8_t> bytes = read_file(g_sections_json);
  return nlohmann::json::parse(bytes.begin(), bytes.end());
}

void first_section(const bench::Options&, bench::Timer&, bench::Report& report) {
  report.add_rate("first", "-", "-", 1.0, 1.0, "img/s");
}
void broken_section(const bench::Options&, bench::Timer&, bench::Report&) {
  const nlohmann::json j = sections_json_on_disk();
  EXPECT_EQ(j["rows"].size(), 1u) << "the first section's row is on disk before the next runs";
  EXPECT_FALSE(bool(j["complete"]));
  throw std::runtime_error("a library refused the row");
}
void last_section(const bench::Options&, bench::Timer&, bench::Report& report) {
  const nlohmann::json j = sections_json_on_disk();
  EXPECT_EQ(j["failed_sections"]["broken"], "a library refused the row");
  EXPECT_FALSE(bool(j["complete"]));
  report.add_rate("last", "-", "-", 2.0, 1.0, "img/s");
}

TEST(BenchSections, EachSectionsRowsAreOnDiskBeforeTheNextRuns) {
  REQUIRE_GPU();  // the timer's L2-flush buffer and events
  g_sections_json = testing::TempDir() + "bench_sections.json";
  std::remove(g_sections_json.c_str());
  bench::Options o;
  o.batch = 3;
  const bench::Peaks peaks = bench::device_peaks();
  bench::Timer timer(peaks.l2_bytes, /*smoke=*/true);
  bench::Report report(peaks);
  EXPECT_FALSE(bench::run_sections({{"first", first_section}, {"broken", broken_section},
                                    {"last", last_section}},
                                   o, timer, report, g_sections_json));
  const nlohmann::json j = sections_json_on_disk();
  EXPECT_TRUE(bool(j["complete"]));
  EXPECT_EQ(j["batch"], 3);
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][0]["kernel"], "first");
  EXPECT_EQ(j["rows"][1]["kernel"], "last");
  EXPECT_EQ(j["failed_sections"].size(), 1u);
}

}  // namespace
}  // namespace ddpm
