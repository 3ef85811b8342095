// The Hopper GEMM (kernels/cuda/gemm_sm90.cu: wgmma reading 128-byte-swizzled tiles from
// shared memory) against a double-precision product of the same bf16 operands.
//
// bf16 products are exact in fp32, so the only error is the order and rounding of the fp32
// sums: within 4 k 2^-24 of the sum of the products' magnitudes per element (twice the
// classic recursive-summation bound, for the tensor cores' own accumulation order). A wrong
// descriptor, swizzle, fragment layout, a stage read before it landed or overwritten before
// its products finished is off by the size of the values.
//
// Runs on an H100 / H200 in a build for architecture 90 (sm_90a code), and on the CPU
// emulation in CI (tests/cuda_emulation/ptx_sm90.h). Elsewhere skips, saying why; with
// DDPM_REQUIRE_GPU on a compute capability 9.0 device without the sm_90a code it fails: the
// build left the kernel out.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/bf16.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "tests/device_buffer.h"
#endif

namespace ddpm {
namespace {

#if DDPM_WITH_CUDA
#define REQUIRE_SM90A()                                                                    \
  do {                                                                                     \
    REQUIRE_GPU();                                                                         \
    if (!cuda::gemm_sm90_available()) {                                                    \
      if (test::gpu_required() && cuda::compute_capability() == 90)                        \
        FAIL() << "a compute capability 9.0 GPU, but the binary has no sm_90a code";       \
      GTEST_SKIP() << "needs a GPU of compute capability 9.0 (H100, H200); this one is "   \
                   << cuda::compute_capability();                                          \
    }                                                                                      \
  } while (0)
#else
#define REQUIRE_SM90A() REQUIRE_GPU()
#endif

struct GemmCase {
  int64_t m, n, k;
};

// Random bf16 bits of normals (Philox, stream `stream`).
std::vector<uint16_t> random_bf16(int64_t count, uint64_t stream) {
  const std::vector<double> v = test::values(test::random_tensor(Shape{count}, stream));
  std::vector<uint16_t> bits;
  for (double x : v) bits.push_back(bf16_bits_from_float(static_cast<float>(x)));
  return bits;
}

#if DDPM_WITH_CUDA
std::vector<float> gemm_on_device(const GemmCase& g, const std::vector<uint16_t>& a,
                                  const std::vector<uint16_t>& b) {
  test::OnDevice<uint16_t> da(a), db(b);
  test::OnDevice<float> dc(static_cast<size_t>(g.m * g.n));
  cuda::gemm_bf16_sm90(g.m, g.n, g.k, da.ptr, db.ptr, dc.ptr);
  return dc.get();
}
#endif

TEST(CudaGemmSm90, MatchesTheProductOfTheBf16Operands) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  // one tile; 8 tiles of k (the 4-stage ring twice); partial m, n and k tiles; k shorter
  // than a stage; several blocks each way with an 8-long k tail
  for (const GemmCase& g : {GemmCase{128, 128, 64}, GemmCase{128, 128, 512},
                            GemmCase{200, 136, 72}, GemmCase{64, 40, 8},
                            GemmCase{300, 260, 328}}) {
    SCOPED_TRACE(testing::Message() << g.m << " x " << g.n << " x " << g.k);
    const std::vector<uint16_t> a = random_bf16(g.m * g.k, 11), b = random_bf16(g.n * g.k, 12);
    const std::vector<float> c = gemm_on_device(g, a, b);
    double norm = 0;
    int misses = 0;
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) {
        double want = 0, magnitude = 0;
        for (int64_t kk = 0; kk < g.k; ++kk) {
          const double p = double(float_from_bf16_bits(a[i * g.k + kk])) *
                           float_from_bf16_bits(b[j * g.k + kk]);
          want += p;
          magnitude += std::fabs(p);
        }
        norm += want * want;
        const double got = c[i * g.n + j];
        const double bound = 4.0 * double(g.k) * std::ldexp(1.0, -24) * magnitude;
        if (!(std::fabs(got - want) <= bound) && misses++ < 5)
          ADD_FAILURE() << "c[" << i << "][" << j << "] = " << got << ", want " << want
                        << " within " << bound;
      }
    }
    EXPECT_GT(norm, 0.0) << "the reference is all zeros: the comparison proves nothing";
  }
#endif
}

TEST(CudaGemmSm90, TwoRunsGiveTheSameBits) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  const GemmCase g{200, 136, 200};
  const std::vector<uint16_t> a = random_bf16(g.m * g.k, 21), b = random_bf16(g.n * g.k, 22);
  EXPECT_EQ(gemm_on_device(g, a, b), gemm_on_device(g, a, b));
#endif
}

TEST(CudaGemmSm90, RefusesKNotAMultipleOf8) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  test::OnDevice<uint16_t> a(size_t{64 * 12}), b(size_t{64 * 12});
  test::OnDevice<float> c(size_t{64 * 64});
  test::expect_error([&] { cuda::gemm_bf16_sm90(64, 64, 12, a.ptr, b.ptr, c.ptr); },
                     {"gemm_bf16_sm90", "k (12)", "multiple of 8"});
#endif
}

}  // namespace
}  // namespace ddpm
