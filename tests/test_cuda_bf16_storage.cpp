// bf16 activations on the GPU against the CPU (engine/ops/cast.cpp): the cast and the
// accumulation across f32 and bf16 give the CPU's bits; the data movement and the add that
// carry bf16 tensors through the U-Net (upsample, concat, split, add) run their own bf16
// kernels on the GPU and give the bits the CPU gets from the f32 ops on widened copies,
// forward and backward, a gradient that accumulates from two uses included. Skips without
// a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/op_profile.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "tests/op_profile_checks.h"
#include "tests/test_util.h"
#if DDPM_WITH_CUDA
#include "kernels/cuda/gemm_lt.cuh"
#endif

namespace ddpm {
namespace {

std::vector<uint16_t> bits_of(const Tensor& t) {
  std::vector<uint16_t> out;
  for (const bf16& b : t.to(Device::CPU).to_vector<bf16>()) out.push_back(b.bits);
  return out;
}

Tensor random_bf16(const Shape& s, uint64_t stream, Device d) {
  return cast(test::random_tensor(s, stream, DType::F32), DType::BF16).to(d);
}

TEST(CudaBf16Storage, CastAndAccumulateAreTheCpusBits) {
  REQUIRE_GPU();
  const Tensor x = test::random_tensor(Shape{1000}, 10, DType::F32, 100.0);
  EXPECT_EQ(bits_of(cast(x.to(Device::CUDA), DType::BF16)), bits_of(cast(x, DType::BF16)));
  const Tensor b = cast(x, DType::BF16);
  EXPECT_EQ(cast(b.to(Device::CUDA), DType::F32).to(Device::CPU).to_vector<float>(),
            cast(b, DType::F32).to_vector<float>());
  // dst += 0.75 src for the three pairings with bf16
  const Tensor y = test::random_tensor(Shape{1000}, 11, DType::F32);
  for (const auto& [dst_t, src_t] : {std::pair{DType::BF16, DType::F32},
                                     std::pair{DType::F32, DType::BF16},
                                     std::pair{DType::BF16, DType::BF16}}) {
    SCOPED_TRACE(std::string(dtype_name(dst_t)) + " += " + dtype_name(src_t));
    const Tensor cpu_dst = cast(y, dst_t).clone(), src = cast(x, src_t);
    const Tensor gpu_dst = cpu_dst.to(Device::CUDA);
    accumulate(cpu_dst, src, 0.75);
    accumulate(gpu_dst, src.to(Device::CUDA), 0.75);
    EXPECT_EQ(cast(gpu_dst, DType::F32).to(Device::CPU).to_vector<float>(),
              cast(cpu_dst, DType::F32).to_vector<float>());
  }
}

// out = (split(concat(upsample(x), z))[0] + [1]) + upsample(x): upsample's output is used
// twice, so its gradient accumulates. C channels each: the concatenation's second half
// starts at channel C, so the copies move 4-, 8- and 16-byte words for C = 6, 4 and 8
// (kernels/cuda/resample.cu copy_as), and single elements for C = 3 (slice_kernel).
TEST(CudaBf16Storage, DataMovementAndAddAreTheCpusBitsOnTheirOwnKernels) {
  REQUIRE_GPU();
  // With `earlier`, x and z already hold a gradient (a backward of their own first): the
  // backwards add to it, each sum in fp32 rounded once, the same bits on both devices.
  for (const int64_t c : {6, 4, 8, 3}) {
    for (const bool earlier : {false, true}) {
      SCOPED_TRACE(testing::Message() << "c " << c << (earlier ? ", added to an earlier gradient"
                                                               : ", the first gradient"));
      const Shape xs{2, 3, 5, c}, zs{2, 6, 10, c};
      std::vector<std::vector<uint16_t>> results[2];
      std::string names;
      for (const Device d : {Device::CPU, Device::CUDA}) {
        Tensor x = random_bf16(xs, 20, d), z = random_bf16(zs, 21, d);
        x.set_requires_grad(true);
        z.set_requires_grad(true);
        if (earlier) backward(test::earlier_gradient_terms({x, z}, DType::F32));
        if (d == Device::CUDA) set_op_profiling(true);
        const Tensor u = upsample_nearest2x(x);
        const std::vector<Tensor> parts = split(concat({u, z}), {c, c});
        const Tensor out = add(add(parts[0], parts[1]), u);
        tape().backward(out, random_bf16(zs, 22, d));
        if (d == Device::CUDA) {
          names += test::gpu_ops_taken();
          set_op_profiling(false);
        }
        for (const Tensor& t : {out, x.grad(), z.grad()}) {
          ASSERT_EQ(t.dtype(), DType::BF16);
          results[d == Device::CUDA].push_back(bits_of(t));
        }
      }
      EXPECT_EQ(results[1][0], results[0][0]) << "out";
      EXPECT_EQ(results[1][1], results[0][1]) << "dx";
      EXPECT_EQ(results[1][2], results[0][2]) << "dz";
      EXPECT_EQ(names.find("cast"), std::string::npos) << "the GPU widened a tensor: " << names;
      EXPECT_NE(names.find("concat/split"), std::string::npos) << names;
    }
  }
}

// The upsample-conv's interleaving of its four phases (engine/ops.h interleave_phases) on
// bf16 tensors, both ways: a copy, so the CPU's bits, in 16-, 8-, 4- and 2-byte words for C
// = 16, 4, 2 and 3 (kernels/cuda/resample.cu interleave_as), with no widening on the GPU.
TEST(CudaBf16Storage, InterleavedPhasesAreTheCpusBits) {
  REQUIRE_GPU();
  for (const int64_t c : {16, 4, 2, 3}) {
    SCOPED_TRACE(c);
    const Shape s{2, 3, 5, c};
    std::vector<std::vector<uint16_t>> results[2];
    std::string names;
    for (const Device d : {Device::CPU, Device::CUDA}) {
      std::vector<Tensor> phases;
      for (uint64_t p = 0; p < 4; ++p) {
        phases.push_back(random_bf16(s, 40 + p, d));
        phases.back().set_requires_grad(true);
      }
      if (d == Device::CUDA) set_op_profiling(true);
      const Tensor y = interleave_phases(phases);
      tape().backward(y, random_bf16(Shape{2, 6, 10, c}, 45, d));
      if (d == Device::CUDA) {
        names += test::gpu_ops_taken();
        set_op_profiling(false);
      }
      results[d == Device::CUDA].push_back(bits_of(y));
      for (const Tensor& p : phases) results[d == Device::CUDA].push_back(bits_of(p.grad()));
    }
    for (size_t k = 0; k < results[0].size(); ++k) EXPECT_EQ(results[1][k], results[0][k]) << k;
    EXPECT_EQ(names.find("cast"), std::string::npos) << "the GPU widened a tensor: " << names;
    EXPECT_NE(names.find("interleave_phases backward"), std::string::npos) << names;
  }
}

// cuBLASLt's bias epilogue on or off (kernels/cuda/gemm_lt.cuh); nothing without CUDA, where
// the test skips.
void set_bias_epilogue(bool on) {
#if DDPM_WITH_CUDA
  cuda::lt::set_bias_epilogue(on);
#else
  (void)on;
#endif
}

// linear on bf16 activations: cuBLAS reads x and dy as they are; the CPU runs the f32 op on
// widened copies (precision bf16 rounds w on both, and b where y is bf16). y comes out of
// cuBLASLt's epilogue, or with it switched off (where cuBLASLt has no algorithm) out of
// row_adds.cuh's pass over the fp32 product: both are held to the CPU, so the pass's
// mappings stay tested (runs of 8 where n is a multiple of 8, pairs for even n, single
// elements). The same bf16 products, summed in
// fp32 in different orders (2e-4 of the products' magnitude sum, as tests/conv_op_check.h
// derives), then y and dx rounded to bf16 (the neighbouring value at worst: 2^-8 more):
// 4.1e-3 of the magnitude sum for y and dx, 2e-4 for the fp32 dw and db. With `earlier`,
// x, w and b already hold a gradient (test::earlier_gradient_terms, a backward of its own
// before the linear), so the backward adds to it (GradWrite::Accumulate; the bf16 dx's add
// in the GEMM's epilogue) instead of writing the first one: dx's sum is rounded to bf16
// once more on each side, 2^-8 of the value's magnitude added to its bound.
TEST(CudaBf16Storage, LinearReadsBf16ActivationsAsTheyAre) {
  REQUIRE_GPU();
  struct Restore {
    ~Restore() { set_bias_epilogue(true); }
  } restore;
  // each the first gradient, then one added to an earlier gradient
  using Case = std::tuple<int64_t, bool, bool>;
  for (const auto& [n, earlier, epilogue] :
       {Case{40, false, true}, Case{40, true, true}, Case{38, false, true}, Case{7, false, true},
        Case{7, true, true}, Case{40, false, false}, Case{40, true, false},
        Case{38, false, false}, Case{7, false, false}, Case{7, true, false}}) {
    SCOPED_TRACE(testing::Message() << "n " << n << (earlier ? ", added to an earlier gradient"
                                                             : ", the first gradient")
                                    << (epilogue ? ", y in cuBLASLt's epilogue"
                                                 : ", y by row_adds' pass"));
    set_bias_epilogue(epilogue);
    set_precision(Precision::BF16);
    const Shape xs{2, 5, 24};
    std::vector<std::vector<float>> runs[3];  // CPU, GPU, CPU on magnitudes
    std::string names;
    for (int run = 0; run < 3; ++run) {
      const Device d = run == 1 ? Device::CUDA : Device::CPU;
      const auto make = [&](const Shape& s, uint64_t stream, bool activation) {
        Tensor t = test::random_tensor(s, stream, DType::F32);
        if (run == 2)
          t = Tensor::from_vector(s, [&] {
            std::vector<float> v = t.to_vector<float>();
            for (float& e : v) e = std::fabs(e);
            return v;
          }());
        if (activation) t = cast(t, DType::BF16);
        t = t.to(d);
        t.set_requires_grad(true);
        return t;
      };
      Tensor x = make(xs, 30, true), w = make({24, n}, 31, false), b = make({n}, 32, false);
      Tensor dy = make({2, 5, n}, 33, true);
      if (earlier && run != 2)  // (the magnitudes' run: the linear's products only)
        backward(test::earlier_gradient_terms({x, w, b}, DType::F32));
      if (run == 1) set_op_profiling(true);
      const Tensor y = linear(x, w, b);
      tape().backward(y, dy.clone());
      if (run == 1) {
        names += test::gpu_ops_taken();
        set_op_profiling(false);
      }
      ASSERT_EQ(y.dtype(), DType::BF16);
      for (const Tensor& t : {y, x.grad(), w.grad(), b.grad()})
        runs[run].push_back(cast(t, DType::F32).to(Device::CPU).to_vector<float>());
    }
    set_precision(Precision::F32);
    const char* what[] = {"y", "dx", "dw", "db"};
    for (size_t k = 0; k < 4; ++k) {
      const double relative = k < 2 ? 4.1e-3 : 2e-4;
      const double sum_rounding = earlier && k == 1 ? std::ldexp(1.0, -8) : 0.0;
      for (size_t i = 0; i < runs[0][k].size(); ++i)
        ASSERT_NEAR(runs[1][k][i], runs[0][k][i],
                    relative * runs[2][k][i] + sum_rounding * std::fabs(runs[0][k][i]) + 1e-6)
            << what[k] << " element " << i;
    }
    EXPECT_EQ(names.find("cast"), std::string::npos) << "the GPU widened a tensor: " << names;
    EXPECT_NE(names.find("linear backward"), std::string::npos) << names;
  }
}

// attention on bf16 qkv: the bf16 flash kernels read it as it is and store out and dqkv in
// bf16; the CPU runs its bf16 model (kernels/cpu/attention.h) on the widened qkv and rounds
// its outputs. tests/test_cuda_ops.cpp holds the flash kernels to that model within 3e-2
// (output) and 5e-2 (gradient) of the rms, where each side's error is at most 2^-8 of the
// magnitude sums. Storing out and dqkv in bf16 then rounds each side's value once more, by
// at most half a bf16 ulp (2^-8 of it) each: 2^-7 of the larger value is added to the
// bound, element by element (a value far above the rms may land on neighbouring bf16
// values: measured, 1.6875 vs 1.6953125 at rms 0.245). Head dims 32, 64, 128 and 256 (the flash
// kernels take 32 to 256).
void expect_close_to_rms_and_ulp(const std::vector<float>& got, const std::vector<float>& want,
                                 double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double sq = 0;
  for (float w : want) sq += double(w) * w;
  const double rms = std::sqrt(sq / std::max<size_t>(1, want.size()));
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = tol * rms + 0x1p-7 * std::max(std::fabs(got[i]), std::fabs(want[i]));
    if (!(std::fabs(double(got[i]) - want[i]) <= bound) && reported++ < 5)  // NaN fails too
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i]
                    << " (bound " << bound << ")";
  }
}

TEST(CudaBf16Storage, AttentionReadsBf16ActivationsAsTheyAre) {
  REQUIRE_GPU();
  set_precision(Precision::BF16);
  struct Case {
    Shape qkv;
    int64_t heads;
  };
  // one partial key tile; three tiles of 64 keys (the forward's cp.async pipeline refills
  // each stage); three of 32 at head dim 256; three heads of 32, whose copies take rows in
  // a permuted order (flash::copy_rows). Head dims 128 and 256 run through cuBLAS's GEMMs
  // (attention_gemm_bf16_pays); the others run the flash pair, its backward with dq by GEMM
  // (L <= 6 d) but for the last, L 200 at d 32: the dq kernel (kernels/cuda/attention.cuh).
  // With `earlier`, qkv already holds a gradient (test::earlier_gradient_terms, a backward of
  // its own first), so the flash backward adds its dqkv to it (GradWrite::Accumulate).
  for (const Case& c : {Case{{2, 37, 3 * 64}, 1}, Case{{1, 150, 3 * 128}, 1},
                        Case{{1, 70, 3 * 256}, 1}, Case{{1, 70, 3 * 96}, 3},
                        Case{{1, 200, 3 * 32}, 1}}) {
    for (const bool earlier : {false, true}) {
      SCOPED_TRACE(testing::Message() << c.qkv.str() << (earlier ? ", added to an earlier gradient"
                                                                 : ", the first gradient"));
      std::vector<float> out[2], grad[2];
      std::string names;
      for (const Device d : {Device::CPU, Device::CUDA}) {
        Tensor qkv = random_bf16(c.qkv, 40, d);
        qkv.set_requires_grad(true);
        if (earlier) backward(test::earlier_gradient_terms({qkv}, DType::F32));
        if (d == Device::CUDA) set_op_profiling(true);
        const Tensor y = attention(qkv, c.heads);
        tape().backward(y, random_bf16(y.shape(), 41, d));
        if (d == Device::CUDA) {
          names += test::gpu_ops_taken();
          set_op_profiling(false);
        }
        ASSERT_EQ(y.dtype(), DType::BF16);
        out[d == Device::CUDA] = cast(y, DType::F32).to(Device::CPU).to_vector<float>();
        grad[d == Device::CUDA] = cast(qkv.grad(), DType::F32).to(Device::CPU).to_vector<float>();
      }
      expect_close_to_rms_and_ulp(out[1], out[0], 3e-2, "output");
      expect_close_to_rms_and_ulp(grad[1], grad[0], 5e-2, "gradient");
      EXPECT_EQ(names.find("cast"), std::string::npos) << "the GPU widened a tensor: " << names;
      EXPECT_NE(names.find("attention backward"), std::string::npos) << names;
    }
  }
  set_precision(Precision::F32);
}

}  // namespace
}  // namespace ddpm
