// `cuda_conv: cudnn` (kernels/cuda/conv2d_cudnn.cu): the engine's convolution op on cuDNN,
// forward and every gradient through the tape (with the bias, time-embedding and residual
// adds), against the CPU reference in the same precision (tests/conv_op_check.h: per
// element, relative to the magnitude of the sums). On the awkward shapes (asymmetric padding,
// stride 2, 3 or 65 channels, 1x1) and the CIFAR-10 U-Net's. The bounds:
//   fp32  the CPU and cuDNN multiply the same fp32 values; a direct sum differs by fp32
//         summation order (<= 2.1e-4 mag for K <= 3456), but cuDNN may pick Winograd or FFT
//         algorithms whose transforms round more: 2e-3 mag;
//   TF32  both round the operands to TF32, the CPU to nearest (ties away), tensor cores
//         their own way: two roundings of 2^-11 that may differ, 2^-10 per product, plus
//         the fp32 bound: 4e-3 mag;
//   bf16  both multiply the same bf16-rounded operands, but cuDNN's y, dx and dw come back
//         as bf16: one more rounding of 2^-8 (3.9e-3), plus summation order: 6e-3 mag.
// A wrong weight transposition, padding offset or crop is off by the size of the values.
// The CPU emulation runs the emulated cuDNN (tests/cuda_emulation/cudnn.h), which checks the
// descriptors and workspaces as cuDNN does. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/op_profile.h"
#include "engine/ops.h"
#include "tests/conv_cases.h"
#include "tests/conv_op_check.h"
#include "tests/op_profile_checks.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/device_info.cuh"
#include "tests/device_buffer.h"
#endif
#if DDPM_CUDA_EMULATION
#include "tests/cuda_emulation/cudnn.h"  // cudnn_refuse_inputs_below, _break_, _slow_algorithm
#endif

namespace ddpm {
namespace {

struct PrecisionRestorer {
  ~PrecisionRestorer() {
    set_conv_algorithm(ConvAlgorithm::Tiled);
    set_precision(Precision::F32);
  }
};

// cuda_autotune's convolutions on (set_conv_autotune, the config key's setter) for a scope,
// off again at its end, however it ends.
struct ConvAutotuneOn {
  ConvAutotuneOn() { set_conv_autotune(true); }
  ~ConvAutotuneOn() { set_conv_autotune(false); }
  ConvAutotuneOn(const ConvAutotuneOn&) = delete;
  ConvAutotuneOn& operator=(const ConvAutotuneOn&) = delete;
};

#if DDPM_WITH_CUDA
// A shape cuDNN has no algorithm for runs on our kernel instead, which would pass the
// comparison without testing the glue: every shape must have run on cuDNN. The emulated cuDNN
// runs them all; the real one may lack NHWC algorithms for inputs of fewer than 8 channels.
void expect_cudnn_ran(const std::vector<test::ConvCase>& cases, cuda::CudnnMath math) {
  for (const test::ConvCase& c : cases) {
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, c.p);
#if !DDPM_CUDA_EMULATION
    if (s.c_in < 8) continue;
#endif
    EXPECT_TRUE(cuda::conv2d_cudnn_supported(s, math)) << test::describe(c);
  }
}
#endif

TEST(CudaConvCudnn, TheOpIsTheCpuReferenceInEachMath) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  set_conv_algorithm(ConvAlgorithm::Cudnn);
  struct Math {
    Precision precision;
    double relative;
    const char* name;
#if DDPM_WITH_CUDA
    cuda::CudnnMath math;
#else
    int math;
#endif
  };
  uint64_t stream = 1200;
#if DDPM_WITH_CUDA
  using M = cuda::CudnnMath;
#else
  enum M { Fp32, Tf32, Bf16 };  // the CUDA-less build compiles the test, which skips
#endif
  for (const Math& m : {Math{Precision::F32, 2e-3, "cuDNN fp32", M::Fp32},
                        Math{Precision::TF32, 4e-3, "cuDNN TF32", M::Tf32},
                        Math{Precision::BF16, 6e-3, "cuDNN bf16", M::Bf16}}) {
    SCOPED_TRACE(m.name);
    set_precision(m.precision);
    test::expect_conv_op_within(m.relative, test::conv_cases(), stream, m.name);
    stream += 100;
#if DDPM_WITH_CUDA
    expect_cudnn_ran(test::conv_cases(), m.math);
#endif
  }
}

// On bf16 activations (x, r, y and their gradients bf16: docs/precision.md) cuDNN reads x
// and dy as they are (staged only for asymmetric padding) and its outputs stay bf16, under
// cudnn and under auto (whichever kernel each pass picked). Against the CPU's f32 op on the
// widened values, rounded once: cuDNN's y is rounded as cuDNN writes it and again after the
// epilogue's adds, a padded input's dx as cuDNN writes it and again as it is added on, dw as
// cuDNN writes it; with the CPU's own rounding, three roundings of 2^-8 of at most the
// magnitude sum, plus fp32 summation order (2.1e-4): 1.2e-2 mag. And with op profiling on,
// no "cast" among the ops of a forward and backward: nothing was widened.
TEST(CudaConvCudnn, ReadsBf16ActivationsAsTheyAre) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  set_precision(Precision::BF16);
  uint64_t stream = 1700;
  for (const ConvAlgorithm algo : {ConvAlgorithm::Cudnn, ConvAlgorithm::Auto}) {
    SCOPED_TRACE(algo == ConvAlgorithm::Cudnn ? "cudnn" : "auto");
    set_conv_algorithm(algo);
    testing::internal::CaptureStdout();  // the plans' and the autotuner's lines
    // (auto: not the first three shapes, which AutoPicksOneVerifiedKernelPerPassOnce must
    // find untuned)
    std::vector<test::ConvCase> cases = test::conv_cases();
    if (algo == ConvAlgorithm::Auto) cases.erase(cases.begin(), cases.begin() + 3);
    test::expect_conv_op_within(1.2e-2, cases, stream, "cuDNN on bf16", DType::BF16);
    stream += 100;
    const test::ConvCase c{{2, 6, 8, 16}, 3, 8, Conv2dParams::downsample()};
    Tensor x = cast(test::random_tensor(c.x, 1790, DType::F32), DType::BF16).to(Device::CUDA);
    Tensor w = test::random_tensor({3, 3, 16, 8}, 1791, DType::F32, 0.1).to(Device::CUDA);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    set_op_profiling(true);
    const Tensor y = conv2d(x, w, Tensor(), c.p);
    tape().backward(y, cast(test::random_tensor(y.shape(), 1792, DType::F32), DType::BF16)
                           .to(Device::CUDA));
    std::string names;
    names += test::gpu_ops_taken();
    set_op_profiling(false);
    testing::internal::GetCapturedStdout();
    EXPECT_EQ(names.find("cast"), std::string::npos) << names;
    EXPECT_NE(names.find("conv2d backward"), std::string::npos) << names;
  }
}

// The adds after cuDNN's product (bias, time embedding, residual; row_adds.cuh) move runs
// of 8 channels when Cout is a multiple of 8 and pairs otherwise (the awkward cases above
// have no such Cout; the model's shapes are skipped under DDPM_TEST_SMALL_SHAPES): both
// mappings, on fp32 tensors (cuDNN fp32) and bf16 activations (cuDNN bf16), within the
// bounds above.
TEST(CudaConvCudnn, TheAddsAfterCudnnMoveRunsOfEightOrPairs) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  set_conv_algorithm(ConvAlgorithm::Cudnn);
  const std::vector<test::ConvCase> cases = {{{2, 5, 6, 8}, 3, 16, Conv2dParams::same(3)},
                                             {{2, 5, 6, 8}, 3, 10, Conv2dParams::same(3)}};
  set_precision(Precision::F32);
  test::expect_conv_op_within(2e-3, cases, 1950, "cuDNN fp32, runs and pairs");
  set_precision(Precision::BF16);
  test::expect_conv_op_within(1.2e-2, cases, 1960, "cuDNN bf16 activations, runs and pairs",
                              DType::BF16);
}

// Two runs, the same bits (the plans prefer cuDNN's deterministic algorithms), and the
// gradients accumulate: a second backward adds the same amount again.
TEST(CudaConvCudnn, IsDeterministicAndAccumulates) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  set_conv_algorithm(ConvAlgorithm::Cudnn);
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    set_precision(precision);
    for (const test::ConvCase& c : {test::ConvCase{{2, 6, 8, 3}, 3, 5, Conv2dParams::downsample()},
                                    test::ConvCase{{3, 5, 7, 65}, 1, 67, Conv2dParams{}}}) {
      SCOPED_TRACE(test::describe(c) + (precision == Precision::BF16 ? " bf16" : " fp32"));
      Tensor x = test::random_tensor(c.x, 31, DType::F32).to(Device::CUDA);
      Tensor w = test::random_tensor({c.k, c.k, c.x[3], c.c_out}, 32, DType::F32, 0.2)
                     .to(Device::CUDA);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      std::vector<std::vector<float>> y, dx, dw;
      for (int run = 0; run < 2; ++run) {
        const Tensor out = conv2d(x, w, Tensor(), c.p);
        backward(sum(out));
        y.push_back(out.to(Device::CPU).to_vector<float>());
        dx.push_back(x.grad().to(Device::CPU).to_vector<float>());
        dw.push_back(w.grad().to(Device::CPU).to_vector<float>());
      }
      EXPECT_EQ(y[0], y[1]);
      // the second backward added the first's gradient again (twice it, up to how cuDNN
      // adds its partial sums onto dx when it accumulates itself: 1e-5 relative)
      for (const auto* g : {&dx, &dw}) {
        ASSERT_EQ((*g)[0].size(), (*g)[1].size());
        for (size_t i = 0; i < (*g)[0].size(); ++i)
          ASSERT_NEAR((*g)[1][i], 2.0 * (*g)[0][i], 1e-5 * std::fabs(2.0 * (*g)[0][i]) + 1e-7) << i;
      }
    }
  }
}

// cuda_conv: auto. Each pass of each shape is timed once (one printed line per pass and
// shape, timing every candidate of the precision's math and naming one; a second run of the
// same shapes tunes nothing), and whichever it picked, the op is the CPU reference within the
// loosest bound of the candidates: in bf16 cuDNN bf16's (above; v4 on the CPU's rounded
// operands is within fp32 summation), in TF32 cuDNN TF32's (v4's TF32 products round the
// same operands), in fp32 cuDNN fp32's (above; v2 and v4 on bf16x6 pieces within fp32
// summation and their products' 2^-23).
TEST(CudaConvCudnn, AutoPicksOneVerifiedKernelPerPassOnce) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  set_conv_algorithm(ConvAlgorithm::Auto);
  struct Math {
    Precision precision;
    double relative;
    const char* name;
    std::vector<std::string> candidates;
  };
  const std::vector<Math> maths = {
      {Precision::BF16, 6e-3, "auto bf16", {"v4 bf16", "cuDNN bf16"}},
      {Precision::TF32, 4e-3, "auto tf32", {"cuDNN TF32", "v4 TF32"}},
      {Precision::F32, 2e-3, "auto fp32", {"v2 tiled", "v4 fp32 on bf16x6", "cuDNN fp32"}}};
  std::vector<test::ConvCase> cases = test::conv_cases();
  cases.resize(3);
  uint64_t stream = 1500;
  for (const Math& m : maths) {
    SCOPED_TRACE(m.name);
    set_precision(m.precision);
    testing::internal::CaptureStdout();
    test::expect_conv_op_within(m.relative, cases, stream, m.name);
    test::expect_conv_op_within(m.relative, cases, stream + 100, m.name);
    stream += 200;
    const std::string printed = testing::internal::GetCapturedStdout();
    for (const test::ConvCase& c : cases) {
      const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, c.p);
      for (const char* pass : {"forward", "dgrad", "wgrad"}) {
        const std::string line = std::string("conv autotune: ") + pass + " (" +
                                 std::to_string(s.n) + ", " + std::to_string(s.h) + ", " +
                                 std::to_string(s.w) + ", " + std::to_string(s.c_in) + ") k" +
                                 std::to_string(c.k) + "x" + std::to_string(c.k) + " -> " +
                                 std::to_string(s.c_out) + " stride " +
                                 std::to_string(s.stride);
        size_t count = 0, at = printed.find(line);
        for (size_t i = at; i != std::string::npos; i = printed.find(line, i + 1)) ++count;
        ASSERT_EQ(count, 1u) << line << " in:\n" << printed;
        const std::string choice = printed.substr(at, printed.find('\n', at) - at);
        bool named = false;
        for (const std::string& candidate : m.candidates) {
          // each candidate checked and timed (cuDNN unless it cannot run the shape), one
          // of them chosen
          const bool timed = test::autotune_timed(choice, candidate);
          EXPECT_TRUE(timed || (candidate.rfind("cuDNN", 0) == 0 &&
                                choice.find("cuDNN cannot run it") != std::string::npos))
              << candidate << " in: " << choice;
          named = named || choice.find("-> " + candidate) != std::string::npos;
        }
        EXPECT_TRUE(named) << choice;
      }
    }
  }
}

#if DDPM_WITH_CUDA
// cuda_conv: auto times its two candidates through the entry points the call came in by. On
// bf16 activations with the weights' bf16 copy, each tuning run is the bf16 entry's own
// kernels, nothing converted: timed through the fp32 entries instead, the H200's 32x32 dgrads
// picked v4 (0.244 ms) over cuDNN (0.303 ms), where on bf16 activations cuDNN takes 0.079 ms
// and v4 0.199 (docs/gpu-runs/2026-12-04): the conversions of the fp32 path decided it.
// Checked by the launches counted: the first auto call of a pass fills its scratch (w, the
// copy, x, dy: 4 launches), runs each candidate kAutotuneWarmUps + kAutotuneTimedRuns times
// (the checked run, a warm-up on a GPU, and the timed runs: 1 + 5 on a GPU, 0 + 1 emulated,
// where the checked run is the timed one) and compares its output with the reference's (1
// launch, kernels/cuda/autotune_check.cuh), then runs the one it chose, each run as many
// launches as that candidate's direct call. (A backward tunes both of its passes.) The same
// shape on fp32 activations is tuned again, apart.
TEST(CudaConvCudnn, AutoTimesItsCandidatesOnTheCallersOperands) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  const Conv2dShape s = conv2d_shape(Shape{2, 9, 9, 16}, Shape{3, 3, 16, 24},
                                     Conv2dParams::same(3));
  const int64_t nx = 2 * 9 * 9 * 16, nw = 3 * 3 * 16 * 24, ny = 2 * 9 * 9 * 24;
  std::vector<float> wv(static_cast<size_t>(nw));
  std::vector<uint16_t> xv(static_cast<size_t>(nx)), dyv(static_cast<size_t>(ny)), wc(wv.size());
  for (size_t i = 0; i < wv.size(); ++i) {
    wv[i] = 0.05f * static_cast<float>(static_cast<int>(i % 13) - 6);
    wc[i] = bf16_bits_from_float(wv[i]);
  }
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = bf16_bits_from_float(0.1f * (i % 7) - 0.3f);
  for (size_t i = 0; i < dyv.size(); ++i) dyv[i] = bf16_bits_from_float(0.1f * (i % 5) - 0.2f);
  const test::OnDevice<uint16_t> x(xv), dy(dyv), w_bf16(wc), y(dyv.size()), dx(xv.size());
  const test::OnDevice<float> w(wv), dw(wv.size()), xf(xv.size()), yf(dyv.size());
  using cuda::ConvAlgo;
  const int64_t ws_floats =
      std::max(cuda::conv2d_forward_workspace(s, ConvAlgo::AutoBf16),
               cuda::conv2d_backward_workspace(s, ConvAlgo::AutoBf16));
  for (ConvAlgo a : {ConvAlgo::Bf16TensorCore, ConvAlgo::CudnnBf16}) {  // fits either
    EXPECT_GE(ws_floats, cuda::conv2d_forward_workspace(s, a)) << cuda::conv_algo_name(a);
    EXPECT_GE(ws_floats, cuda::conv2d_backward_workspace(s, a)) << cuda::conv_algo_name(a);
  }
  const test::OnDevice<float> ws(static_cast<size_t>(ws_floats));
  enum Pass { Forward, Dgrad, Wgrad };
  const auto run = [&](Pass pass, ConvAlgo a) {
    if (pass == Forward)
      cuda::conv2d_forward(s, x.ptr, w.ptr, nullptr, y.ptr, a, ws.ptr, nullptr, nullptr,
                           w_bf16.ptr);
    else if (pass == Dgrad)
      cuda::conv2d_backward(s, x.ptr, w.ptr, dy.ptr, dx.ptr, nullptr, nullptr, a, ws.ptr,
                            w_bf16.ptr);
    else
      cuda::conv2d_backward(s, x.ptr, w.ptr, dy.ptr, nullptr, dw.ptr, nullptr, a, ws.ptr,
                            w_bf16.ptr);
  };
  const auto launches_of = [&](Pass pass, ConvAlgo a) {
    const DeviceWorkCounts before = device_work_counts();
    run(pass, a);
    return static_cast<int64_t>((device_work_counts() - before).launches);
  };
  // each direct call once first: cuDNN's plan and anything else made once per shape
  std::map<std::pair<int, ConvAlgo>, int64_t> direct;
  for (Pass pass : {Forward, Dgrad, Wgrad})
    for (ConvAlgo a : {ConvAlgo::Bf16TensorCore, ConvAlgo::CudnnBf16}) {
      run(pass, a);
      direct[{pass, a}] = launches_of(pass, a);
    }
  const auto direct_of = [&](Pass pass, ConvAlgo a) { return direct.at({pass, a}); };
  // (a GPU's cuDNN may have no algorithm for the shape: then v4 is the only candidate)
  const bool cudnn_runs = cuda::conv2d_cudnn_supported(s, cuda::CudnnMath::Bf16);
  const auto tuning = [&](Pass pass) {
    const auto candidate = [&](ConvAlgo a) {
      return (cuda::kAutotuneWarmUps + cuda::kAutotuneTimedRuns) * direct_of(pass, a) + 1;
    };
    return 4 + candidate(ConvAlgo::Bf16TensorCore) +
           (cudnn_runs ? candidate(ConvAlgo::CudnnBf16) : 0);
  };
  // the candidate a printed line chose
  const auto chosen = [](const std::string& printed, const std::string& line) {
    const size_t at = printed.find(line);
    EXPECT_NE(at, std::string::npos) << line << " in:\n" << printed;
    if (at == std::string::npos) return ConvAlgo::Bf16TensorCore;
    const std::string choice = printed.substr(at, printed.find('\n', at) - at);
    return choice.find("-> cuDNN bf16") != std::string::npos ? ConvAlgo::CudnnBf16
                                                             : ConvAlgo::Bf16TensorCore;
  };
  const std::string shape = " (2, 9, 9, 16) k3x3 -> 24 stride 1, ";
  testing::internal::CaptureStdout();
  const int64_t forward = launches_of(Forward, ConvAlgo::AutoBf16);
  const int64_t backward = launches_of(Dgrad, ConvAlgo::AutoBf16);
  const int64_t again =
      launches_of(Dgrad, ConvAlgo::AutoBf16) + launches_of(Forward, ConvAlgo::AutoBf16);
  cuda::conv2d_forward(s, xf.ptr, w.ptr, nullptr, yf.ptr, ConvAlgo::AutoBf16, ws.ptr);
  const std::string printed = testing::internal::GetCapturedStdout();
  const std::string operands = "bf16 activations and weight copy:";
  const ConvAlgo f = chosen(printed, "conv autotune: forward" + shape + operands);
  const ConvAlgo d = chosen(printed, "conv autotune: dgrad" + shape + operands);
  chosen(printed, "conv autotune: wgrad" + shape + operands);
  EXPECT_EQ(forward, tuning(Forward) + direct_of(Forward, f)) << printed;
  EXPECT_EQ(backward, tuning(Dgrad) + tuning(Wgrad) + direct_of(Dgrad, d)) << printed;
  EXPECT_EQ(again, direct_of(Dgrad, d) + direct_of(Forward, f)) << "tuned once";
  chosen(printed, "conv autotune: forward" + shape + "fp32 activations:");
  size_t lines = 0;
  for (size_t i = printed.find("conv autotune: "); i != std::string::npos;
       i = printed.find("conv autotune: ", i + 1))
    ++lines;
  EXPECT_EQ(lines, 4u) << printed;
}
#endif

#if DDPM_WITH_CUDA
// cuda_autotune under cuda_conv: cudnn times cuDNN's algorithms (kernels/cuda/
// conv2d_cudnn_plan.cuh). Per new shape, math and pass one line: every algorithm the
// heuristics rank that can run, is deterministic and needs at most the workspace cap checked
// and timed, the heuristics' pick (the reference) among them, the others named with why not,
// and one of the timed ones kept, which the plan's line then names and the op runs: the CPU
// reference within the math's bound (above). A second run of the same shapes times nothing.
// The emulated cuDNN's ranking is known (tests/cuda_emulation/cudnn.cpp): the forward times
// 1 and 0, not 4 (a terabyte of workspace) nor 6 (cannot run); the dgrad times 1 and 3, not
// 0 (not deterministic); the wgrad times 1 and 6, not 0 nor 3; with algorithm 3 made
// wrong, the dgrad's check leaves it out; and with algorithm 1 made 20 ms slower, the plans
// keep 0, 1 and 6 (6 asks for twice 1's workspace, which the op's calls must then have).
// Through the config key's setter (set_conv_autotune).
TEST(CudaConvCudnn, TheBenchmarkTimesCudnnsDeterministicAlgorithmsAndKeepsACheckedOne) {
  REQUIRE_GPU();
  PrecisionRestorer restore;
  const ConvAutotuneOn autotune_on;  // the config key's setter: cuDNN's algorithms timed too
  ASSERT_TRUE(cuda::conv2d_cudnn_benchmark());
  set_conv_algorithm(ConvAlgorithm::Cudnn);
#if DDPM_CUDA_EMULATION
  struct Unbreak {
    ~Unbreak() {
      cuda_emu::cudnn_break_algorithm(-1);
      cuda_emu::cudnn_slow_algorithm(-1, 0.0);
    }
  } unbreak;
  cuda_emu::cudnn_break_algorithm(3);
  cuda_emu::cudnn_slow_algorithm(1, 20.0);  // the heuristics' pick: another one is kept
#endif
  std::vector<test::ConvCase> cases = test::conv_cases();
  cases.resize(3);
  uint64_t stream = 1900;
  for (const auto& [precision, bound, math] :
       {std::tuple{Precision::BF16, 6e-3, "bf16"}, std::tuple{Precision::F32, 2e-3, "fp32"}}) {
    SCOPED_TRACE(math);
    set_precision(precision);
    testing::internal::CaptureStdout();
    test::expect_conv_op_within(bound, cases, stream, math);
    test::expect_conv_op_within(bound, cases, stream + 100, math);
    stream += 200;
    const std::string printed = testing::internal::GetCapturedStdout();
    for (const test::ConvCase& c : cases) {
      const Conv2dShape s = conv2d_shape(c.x, Shape{c.k, c.k, c.x[3], c.c_out}, c.p);
#if !DDPM_CUDA_EMULATION
      if (!cuda::conv2d_cudnn_supported(s, precision == Precision::BF16 ? cuda::CudnnMath::Bf16
                                                                         : cuda::CudnnMath::Fp32))
        continue;  // a GPU's cuDNN may have no algorithm for a few channels: nothing timed
#endif
      const std::string shape =
          "(" + std::to_string(s.n) + ", " + std::to_string(s.h) + ", " + std::to_string(s.w) +
          ", " + std::to_string(s.c_in) + ") k" + std::to_string(c.k) + "x" +
          std::to_string(c.k) + " -> " + std::to_string(s.c_out) + " stride " +
          std::to_string(s.stride) + " pad " + std::to_string(s.pad_top) + "," +
          std::to_string(s.pad_left) + "," + std::to_string(s.pad_bottom) + "," +
          std::to_string(s.pad_right) + " " + math;
      std::string plan_line = "cudnn: conv " + shape + ":";
      for (const char* pass : {"forward", "dgrad", "wgrad"}) {
        const std::string head = std::string("cudnn benchmark: ") + pass + " " + shape + ":";
        size_t count = 0, at = printed.find(head);
        for (size_t i = at; i != std::string::npos; i = printed.find(head, i + 1)) ++count;
        ASSERT_EQ(count, 1u) << head << " in:\n" << printed;
        const std::string line = printed.substr(at, printed.find('\n', at) - at);
        const size_t arrow = line.rfind(" -> algo ");
        ASSERT_NE(arrow, std::string::npos) << line;
        const std::string kept = line.substr(arrow + 4);  // "algo N"
        EXPECT_TRUE(test::autotune_timed(line, kept)) << line;
        // each candidate once (the heuristics' pick among them)
        const std::string listed = line.substr(0, std::min(line.find(" (not timed"), arrow));
        for (int a = 0; a < 8; ++a) {
          const std::string entry = "algo " + std::to_string(a) + " ";
          size_t times = 0;
          for (size_t i = listed.find(entry); i != std::string::npos; i = listed.find(entry, i + 1))
            ++times;
          EXPECT_LE(times, 1u) << entry << "in: " << line;
        }
        plan_line += std::string(pass == std::string("forward") ? " " : ", ") + pass + " " + kept;
#if DDPM_CUDA_EMULATION
        const std::string pass_name = pass;
        if (pass_name == "forward") {
          EXPECT_TRUE(test::autotune_timed(line, "algo 1") && test::autotune_timed(line, "algo 0"))
              << line;
          EXPECT_NE(line.find("(not timed: algo 4, 1048576 MiB of workspace)"), std::string::npos)
              << line;
          EXPECT_EQ(line.find("algo 6"), std::string::npos) << line;  // cannot run: not named
        } else if (pass_name == "dgrad") {
          EXPECT_TRUE(test::autotune_timed(line, "algo 1")) << line;
          EXPECT_NE(line.find("algo 3 left out (error 1"), std::string::npos) << line;
          EXPECT_NE(line.find("(not timed: algo 0, not deterministic)"), std::string::npos)
              << line;
        } else {
          EXPECT_TRUE(test::autotune_timed(line, "algo 1") && test::autotune_timed(line, "algo 6"))
              << line;
          EXPECT_NE(line.find("(not timed: algo 0, not deterministic; algo 3, not "
                              "deterministic)"),
                    std::string::npos)
              << line;
        }
#endif
      }
      EXPECT_NE(printed.find(plan_line), std::string::npos) << plan_line << " in:\n" << printed;
#if DDPM_CUDA_EMULATION  // algorithm 1 slowed, 3 wrong: 0, 1 (the dgrad's only one left), 6
      EXPECT_NE(plan_line.find(": forward algo 0, dgrad algo 1, wgrad algo 6"), std::string::npos)
          << plan_line;
#endif
    }
  }
}
#endif

#if DDPM_WITH_CUDA
// The benchmark allocates and waits, which a capture cannot hold: a shape first met inside a
// CUDA graph's capture with cuda_autotune on is an error that says so (the eager steps before
// a capture see every shape), and the failed capture is ended.
TEST(CudaConvCudnn, TheBenchmarkRefusesANewShapeInsideACapture) {
  REQUIRE_GPU();
  const ConvAutotuneOn autotune_on;
  const Conv2dShape s = conv2d_shape(Shape{1, 5, 5, 8}, Shape{3, 3, 8, 16}, Conv2dParams::same(3));
  CudaGraph graph;
  test::expect_error(
      [&] { graph.capture([&] { (void)cuda::conv2d_cudnn_supported(s, cuda::CudnnMath::Bf16); }); },
      {"cuda_autotune", "(1, 5, 5, 8) k3x3 -> 16", "inside a CUDA graph capture"});
  EXPECT_FALSE(engine_stream_capturing());
}
#endif

#if DDPM_CUDA_EMULATION
// A shape cuDNN has no algorithm for runs on our kernel of the same math, and the log says
// so, under cudnn and under auto: the emulated cuDNN made to refuse inputs of fewer than 8
// channels, as the real one may for bf16 (the CIFAR-10 model's first convolution has 3).
TEST(CudaConvCudnn, AShapeCudnnCannotRunRunsOnOurKernel) {
  PrecisionRestorer restore;
  cuda_emu::cudnn_refuse_inputs_below(8);
  set_precision(Precision::BF16);
  testing::internal::CaptureStdout();
  set_conv_algorithm(ConvAlgorithm::Cudnn);
  const test::ConvCase refused{{1, 6, 6, 3}, 3, 4, Conv2dParams::same(3)};
  test::expect_conv_op_within(6e-3, {refused}, 1700, "cuDNN bf16 (refused)");
  set_conv_algorithm(ConvAlgorithm::Auto);
  const test::ConvCase tuned{{1, 7, 7, 3}, 3, 4, Conv2dParams::same(3)};
  test::expect_conv_op_within(6e-3, {tuned}, 1800, "auto bf16 (cuDNN refused)");
  const std::string printed = testing::internal::GetCapturedStdout();
  cuda_emu::cudnn_refuse_inputs_below(0);
  const Conv2dShape s = conv2d_shape(refused.x, Shape{3, 3, 3, 4}, refused.p);
  EXPECT_FALSE(cuda::conv2d_cudnn_supported(s, cuda::CudnnMath::Bf16));
  EXPECT_NE(printed.find("cudnn: conv (1, 6, 6, 3) k3x3 -> 4 stride 1 pad 1,1,1,1 bf16: cuDNN "
                         "cannot run it (no forward algorithm); the engine's own kernel runs "
                         "this shape"),
            std::string::npos)
      << printed;
  for (const char* pass : {"forward", "dgrad", "wgrad"})
    EXPECT_NE(printed.find(std::string("conv autotune: ") + pass +
                           " (1, 7, 7, 3) k3x3 -> 4 stride 1, fp32 activations: v4 bf16 "),
              std::string::npos)
        << pass << " in:\n" << printed;
  EXPECT_EQ(printed.find("-> cuDNN bf16"), std::string::npos) << printed;
}
#endif

}  // namespace
}  // namespace ddpm
