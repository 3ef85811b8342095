// The op profile (engine/op_profile.h): its tables on made-up times (the clock named in the
// header, the costliest shapes across ops), and on the CPU each range's own time on the
// host's clock (nested ranges apart, so the table's sum is what the ops took) and every op of
// a CPU training step timed. (A GPU step's: test_cuda_model.cpp.)
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/op_profile.h"
#include "models/unet/image_run.h"
#include "tests/cuda_model_config.h"
#include "tests/op_profile_checks.h"

namespace ddpm {
namespace {

// A clock the test moves by hand: the CPU ranges' times become exact numbers.
double g_now_ms = 0;
double test_clock() { return g_now_ms; }

// Profiling on and the test's clock, both restored however the test ends.
struct ProfilingWithTestClock {
  ProfilingWithTestClock() {
    op_profile_take();  // nothing left over from before
    g_now_ms = 0;
    set_op_profile_cpu_clock(&test_clock);
    set_op_profiling(true);
  }
  ~ProfilingWithTestClock() {
    set_op_profiling(false);
    set_op_profile_cpu_clock(nullptr);
    op_profile_take();
  }
};

// outer [0, 9) holds inner [2, 5) and inner [6, 7): the outer's own time is 9 - 3 - 1 = 5,
// the inner's 3 + 1 over two calls, and the sum, 9, is the wall clock. The shape in force
// where a range opens is the one it records.
TEST(OpProfile, ACpuRangeCountsItsOwnTimeNotTheRangesInsideIt) {
  ProfilingWithTestClock on;
  {
    OpTimer outer("outer", /*on_gpu=*/false);
    g_now_ms = 2;
    {
      const OpShape shape([] { return std::string("(2, 3)"); });
      OpTimer inner("inner", false);
      g_now_ms = 5;
    }
    g_now_ms = 6;
    {
      OpTimer inner("inner", false);
      g_now_ms = 7;
    }
    g_now_ms = 9;
  }
  const std::vector<OpTime> times = op_profile_take();
  ASSERT_EQ(times.size(), 2u);
  EXPECT_EQ(times[0].name, "outer");  // the most time first
  EXPECT_TRUE(times[0].cpu);
  EXPECT_EQ(times[0].calls, 1);
  EXPECT_DOUBLE_EQ(times[0].ms, 5.0);
  EXPECT_TRUE(times[0].shapes.empty());
  EXPECT_EQ(times[1].name, "inner");
  EXPECT_TRUE(times[1].cpu);
  EXPECT_EQ(times[1].calls, 2);
  EXPECT_DOUBLE_EQ(times[1].ms, 4.0);
  ASSERT_EQ(times[1].shapes.size(), 1u);  // one call named a shape
  EXPECT_EQ(times[1].shapes[0].shape, "(2, 3)");
  EXPECT_EQ(times[1].shapes[0].calls, 1);
  EXPECT_DOUBLE_EQ(times[1].shapes[0].ms, 3.0);
  EXPECT_TRUE(op_profile_take().empty());  // taken
  // profiling off: nothing recorded
  set_op_profiling(false);
  {
    OpTimer off("off", false);
    g_now_ms = 20;
  }
  EXPECT_TRUE(op_profile_take().empty());
}

// The header names the clock; a table of both clocks marks the CPU's names. Times per step:
// 6 ms over 2 steps is 3 ms a step, a quarter of the 12 ms sum.
TEST(OpProfile, ATableNamesTheClockOfItsTimes) {
  OpTime gpu{"conv2d", 4, 18.0, {}, /*cpu=*/false};
  OpTime cpu{"cast", 2, 6.0, {}, /*cpu=*/true};
  const std::string gpu_only = format_op_profile({gpu}, 2);
  EXPECT_NE(gpu_only.find("op (GPU time, CUDA events)"), std::string::npos) << gpu_only;
  const std::string cpu_only = format_op_profile({cpu}, 2);
  EXPECT_NE(cpu_only.find("op (CPU time, wall clock, own)"), std::string::npos) << cpu_only;
  EXPECT_EQ(cpu_only.find("(CPU)"), std::string::npos) << cpu_only;
  const std::string both = format_op_profile({gpu, cpu}, 2);
  EXPECT_NE(both.find("op (GPU: CUDA events; CPU: wall clock)"), std::string::npos) << both;
  EXPECT_NE(both.find("\nconv2d   "), std::string::npos) << both;
  EXPECT_NE(both.find("\ncast (CPU)   "), std::string::npos) << both;
  EXPECT_NE(both.find("1.0        3.000    25.0%"), std::string::npos) << both;
  EXPECT_NE(both.find("3.0       12.000   100.0%"), std::string::npos) << both;  // the sum
}

// The op profile's table by shape (engine/op_profile.h), on made-up times: the costliest
// (op, shape) pairs across ops, most time first, at most top_shapes of them, each with its
// share of the sum and of its op; none without shapes.
TEST(OpProfile, TheTableListsTheCostliestShapesAcrossOps) {
  const std::vector<OpTime> times = {
      {"conv2d", 4, 12.0, {{"(1, 8, 8, 4) k3x3 -> 4 stride 1", 3, 9.0},
                           {"(1, 4, 4, 4) k3x3 -> 4 stride 1", 1, 3.0}}},
      {"linear", 2, 6.0, {{"16 x 4 -> 8", 2, 6.0}}},
      {"add", 1, 4.0, {}}};
  const std::string table = format_op_profile(times, 2, 2);
  const size_t big = table.find("(1, 8, 8, 4) k3x3 -> 4 stride 1");
  const size_t lin = table.find("16 x 4 -> 8");
  ASSERT_NE(big, std::string::npos) << table;
  ASSERT_NE(lin, std::string::npos) << table;
  EXPECT_LT(big, lin);                                                   // most time first
  EXPECT_EQ(table.find("(1, 4, 4, 4)"), std::string::npos) << table;     // past top_shapes
  EXPECT_NE(table.find("the 2 costliest (op, shape) pairs"), std::string::npos) << table;
  // 9 of the sum's 22 ms (40.9%), 75% of conv2d's; per step (2): 4.5 ms, 1.5 calls
  EXPECT_NE(table.find("     1.5      4.500   40.9%   75.0%"), std::string::npos) << table;
  // an op's name longer than the column's 26 characters widens it for every row: the
  // shapes start at one offset
  const std::vector<OpTime> long_name = {
      {"group_norm_silu_dropout backward", 1, 2.0, {{"(2, 64, 8), 4 groups", 1, 2.0}}},
      {"linear", 1, 1.0, {{"16 x 4 -> 8", 1, 1.0}}}};
  const std::string wide = format_op_profile(long_name, 1);
  const size_t gn_row = wide.rfind("\ngroup_norm_silu_dropout backward "),
               linear_row = wide.rfind("\nlinear ");
  ASSERT_NE(gn_row, std::string::npos) << wide;
  ASSERT_NE(linear_row, std::string::npos) << wide;
  EXPECT_EQ(wide.find("(2, 64, 8)", gn_row) - gn_row, wide.find("16 x 4", linear_row) - linear_row)
      << wide;
  const std::vector<OpTime> no_shapes = {{"add", 1, 4.0, {}}};
  EXPECT_EQ(format_op_profile(no_shapes, 1).find("costliest"), std::string::npos);
}

// Every op of a CPU training step is timed on the CPU's clock, forward and backward apart,
// with the loss, the optimiser's pass and the step summary; the convolutions, linear layers,
// attention and group norms name their shapes on every call. Own times are disjoint stretches
// of one thread's time, so they add up to no more than the step's wall clock. On the
// reference kernels and the fast ones, in fp32 and in bf16 (whose CPU ops run on widened
// copies between casts).
void expect_op_profile_of_a_cpu_step(const std::string& precision, const std::string& kernels) {
  SCOPED_TRACE(precision + ", " + kernels + " kernels");
  ImageRun run(test::small_unet_config("cpu", precision, {"cpu_kernels=" + kernels}));
  run.step();
  op_profile_take();
  set_op_profiling(true);
  const auto start = std::chrono::steady_clock::now();
  run.step();
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  set_op_profiling(false);
  const std::vector<OpTime> times = op_profile_take();
  double sum_ms = 0;
  for (const OpTime& t : times) sum_ms += t.ms;
  EXPECT_LE(sum_ms, wall_ms);
  std::map<std::string, OpTime> ops = test::expect_every_op_of_a_step(times, /*cpu=*/true);
  // under bf16 the CPU's linear backward is two calls: dx and dw from rounded operands, then
  // db from the fp32 gradient (every linear layer here has a bias)
  EXPECT_EQ(ops["linear backward"].calls, (precision == "bf16" ? 2 : 1) * ops["linear"].calls);
  if (precision == "bf16") {  // the CPU's bf16 ops: f32 ops on widened copies, cast back
    EXPECT_GT(ops["cast"].calls, 0);
    EXPECT_GT(ops["accumulate"].calls, 0);  // a bf16 gradient's second contribution
  }
  const std::string table = format_op_profile(times, 1, 0);
  std::printf("%s", table.c_str());
  EXPECT_NE(table.find("op (CPU time, wall clock, own)"), std::string::npos) << table;
  run.step();  // profiling off
  EXPECT_TRUE(op_profile_take().empty());
}

TEST(OpProfile, TimesEveryOpOfACpuStep) {
  expect_op_profile_of_a_cpu_step("fp32", "reference");
  expect_op_profile_of_a_cpu_step("fp32", "fast");
  expect_op_profile_of_a_cpu_step("bf16", "fast");
}

}  // namespace
}  // namespace ddpm
