// The Hopper GEMM (kernels/cuda/gemm_sm90.cu: wgmma reading 128-byte-swizzled tiles from
// shared memory, loaded by cp.async or by the copy engine, TMA) against a double-precision
// product of the same bf16 operands.
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
#include <utility>
#include <vector>

#include "kernels/bf16.h"
#include "tests/require_sm90a.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "tests/device_buffer.h"
#endif

namespace ddpm {
namespace {


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
const char* major_name(cuda::Major major) { return major == cuda::Major::K ? "K" : "MN"; }
const char* loads_name(cuda::GemmLoads loads) {
  return loads == cuda::GemmLoads::CpAsync     ? "cp.async"
         : loads == cuda::GemmLoads::Tma       ? "TMA"
         : loads == cuda::GemmLoads::TmaPaired ? "TMA, 3 stages, two blocks an SM"
                                               : "TMA, warp-specialised";
}

// The copy engine's schedules: each lands the tiles cp.async does, in the same layout.
constexpr cuda::GemmLoads kTmaLoads[] = {cuda::GemmLoads::Tma, cuda::GemmLoads::TmaWarpSpecialized,
                                         cuda::GemmLoads::TmaPaired};

// x (rows x k, row-major) as the kernel reads it laid out `major`: as it is, or transposed.
std::vector<uint16_t> stored(const std::vector<uint16_t>& x, int64_t rows, int64_t k,
                             cuda::Major major) {
  if (major == cuda::Major::K) return x;
  std::vector<uint16_t> t(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t kk = 0; kk < k; ++kk) t[kk * rows + r] = x[r * k + kk];
  return t;
}

// c = a b^T of a (m x k) and b (n x k), handed to the kernel laid out a_major and b_major,
// its tiles loaded by `loads`.
std::vector<float> gemm_on_device(const GemmCase& g, const std::vector<uint16_t>& a,
                                  const std::vector<uint16_t>& b,
                                  cuda::Major a_major = cuda::Major::K,
                                  cuda::Major b_major = cuda::Major::K,
                                  cuda::GemmLoads loads = cuda::GemmLoads::CpAsync) {
  test::OnDevice<uint16_t> da(stored(a, g.m, g.k, a_major)), db(stored(b, g.n, g.k, b_major));
  test::OnDevice<float> dc(static_cast<size_t>(g.m * g.n));
  cuda::gemm_bf16_sm90(g.m, g.n, g.k, da.ptr, db.ptr, dc.ptr, a_major, b_major, loads);
  return dc.get();
}

// Every element of c against the double sum of a's and b's products, within the bound above.
void expect_product(const GemmCase& g, const std::vector<uint16_t>& a,
                    const std::vector<uint16_t>& b, const std::vector<float>& c) {
  double norm = 0;
  int misses = 0;
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double want = 0, magnitude = 0;
      for (int64_t kk = 0; kk < g.k; ++kk) {
        const double p =
            double(float_from_bf16_bits(a[i * g.k + kk])) * float_from_bf16_bits(b[j * g.k + kk]);
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

// The cp.async kernel against the reference; the TMA kernels (tiles boxed by the copy engine:
// partial tiles zero-filled by it, not predicated; the warp-specialised one with a producer
// warpgroup and stages handed over by mbarriers, no block barrier; the paired one in a ring
// of 3 stages) against its bits. 8 tiles of k take each stage of a ring through at least two
// phases, so both parities of the barriers are exercised.
TEST(CudaGemmSm90, MatchesTheProductOfTheBf16Operands) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  // one tile; 8 tiles of k (the 4-stage ring twice); partial m, n and k tiles; k shorter
  // than a stage; several blocks each way with an 8-long k tail; an odd n (a row's last
  // column pair has one column: its second store would be the next row's first element)
  for (const GemmCase& g : {GemmCase{128, 128, 64}, GemmCase{128, 128, 512},
                            GemmCase{200, 136, 72}, GemmCase{64, 40, 8},
                            GemmCase{300, 260, 328}, GemmCase{72, 37, 64}}) {
    SCOPED_TRACE(testing::Message() << g.m << " x " << g.n << " x " << g.k);
    const std::vector<uint16_t> a = random_bf16(g.m * g.k, 11), b = random_bf16(g.n * g.k, 12);
    const std::vector<float> c = gemm_on_device(g, a, b);
    expect_product(g, a, b, c);
    // the copy engine's loads (TMA), plain, warp-specialised and paired: the same tiles in
    // the same layout, so the same bits
    for (const cuda::GemmLoads tma : kTmaLoads)
      EXPECT_EQ(gemm_on_device(g, a, b, cuda::Major::K, cuda::Major::K, tma), c)
          << loads_name(tma);
  }
#endif
}

// The MN-major layouts (the instruction's trans bits, the panels of 64 at the descriptor's
// leading byte offset), each operand either way: the linear layer's dgrad (K, MN) and wgrad
// (MN, MN) among them. m and n multiples of 8 (an MN-major operand's whole chunks); k any
// when both are MN-major: 70 leaves a partial chunk of rows, and 1 a single row of k.
TEST(CudaGemmSm90, EveryLayoutOfTheOperandsGivesTheProduct) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  using cuda::Major;
  const std::pair<Major, Major> layouts[] = {
      {Major::K, Major::MN}, {Major::MN, Major::K}, {Major::MN, Major::MN}};
  for (const GemmCase& g : {GemmCase{128, 128, 128}, GemmCase{200, 136, 200},
                            GemmCase{72, 264, 64}, GemmCase{136, 72, 70}, GemmCase{64, 8, 1}}) {
    const std::vector<uint16_t> a = random_bf16(g.m * g.k, 31), b = random_bf16(g.n * g.k, 32);
    for (const auto& [a_major, b_major] : layouts) {
      if (g.k % 8 != 0 && (a_major == Major::K || b_major == Major::K)) continue;
      SCOPED_TRACE(testing::Message() << g.m << " x " << g.n << " x " << g.k << ", a "
                                      << major_name(a_major) << "-major, b "
                                      << major_name(b_major) << "-major");
      const std::vector<float> c = gemm_on_device(g, a, b, a_major, b_major);
      expect_product(g, a, b, c);
      for (const cuda::GemmLoads tma : kTmaLoads)
        EXPECT_EQ(gemm_on_device(g, a, b, a_major, b_major, tma), c) << loads_name(tma);
    }
  }
#endif
}

// k = 0: c is the empty sum, zeros, whatever the loads (the TMA ones leave it to the
// cp.async kernel: a tensor map has no empty dimension). c starts as 7s: nothing may be left.
TEST(CudaGemmSm90, AnEmptySumIsZeros) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  const test::OnDevice<uint16_t> a(size_t{64 * 8}), b(size_t{40 * 8});
  for (const cuda::GemmLoads loads : {cuda::GemmLoads::CpAsync, cuda::GemmLoads::Tma,
                                      cuda::GemmLoads::TmaWarpSpecialized,
                                      cuda::GemmLoads::TmaPaired}) {
    test::OnDevice<float> c(std::vector<float>(64 * 40, 7.0f));
    cuda::gemm_bf16_sm90(64, 40, 0, a.ptr, b.ptr, c.ptr, cuda::Major::K, cuda::Major::K, loads);
    EXPECT_EQ(c.get(), std::vector<float>(64 * 40, 0.0f)) << loads_name(loads);
  }
#endif
}

// The plain TMA kernel's rings are sized for one block an SM (4 stages, 129 KB) and two (3
// stages, 97 KB, 90 registers): the GPU's occupancy calculator must agree, or the paired
// rows of kernel-bench time something else. The emulation, which allocates no registers,
// refuses to answer and says why.
TEST(CudaGemmSm90, TheRingsHoldTheBlocksAnSmTheyAreSizedFor) {
  REQUIRE_SM90A();
#if DDPM_CUDA_EMULATION
  test::expect_error([] { cuda::gemm_sm90_blocks_an_sm(cuda::GemmLoads::TmaPaired); },
                     {"gemm_bf16_sm90", "allocates no registers", "only a GPU"});
#elif DDPM_WITH_CUDA
  EXPECT_EQ(cuda::gemm_sm90_blocks_an_sm(cuda::GemmLoads::Tma), 1);
  EXPECT_EQ(cuda::gemm_sm90_blocks_an_sm(cuda::GemmLoads::TmaPaired), 2);
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

TEST(CudaGemmSm90, RefusesOperandsOfPartialChunks) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  using cuda::Major;
  test::OnDevice<uint16_t> a(size_t{64 * 12}), b(size_t{64 * 12});
  test::OnDevice<float> c(size_t{64 * 64});
  test::expect_error([&] { cuda::gemm_bf16_sm90(64, 64, 12, a.ptr, b.ptr, c.ptr); },
                     {"gemm_bf16_sm90", "a is K-major", "k (12)", "multiple of 8"});
  test::expect_error(
      [&] { cuda::gemm_bf16_sm90(12, 64, 16, a.ptr, b.ptr, c.ptr, Major::MN, Major::MN); },
      {"gemm_bf16_sm90", "a is MN-major", "m (12)", "multiple of 8"});
  test::expect_error(
      [&] { cuda::gemm_bf16_sm90(64, 20, 16, a.ptr, b.ptr, c.ptr, Major::K, Major::MN); },
      {"gemm_bf16_sm90", "b is MN-major", "n (20)", "multiple of 8"});
#endif
}

}  // namespace
}  // namespace ddpm
