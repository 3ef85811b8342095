// The tensor cores' sums: the model the CPU emulation adds by (tests/cuda_emulation/
// tensor_core_sum.h) on sums worked by hand, and against a GPU's own mma.sync
// (kernels/cuda/tensor_core_probe.cu), on operands chosen so that every other model in
// reach gives other bits. On a GPU whose sums are another model's, the failure names the
// models that do give its bits: the parameters to put in tensor_core_sum.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/tensor_core_sum.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/tensor_core_probe.cuh"
#include "tests/device_buffer.h"
#endif

namespace ddpm {
namespace {

using cuda_emu::TensorCoreSum;

float dot(float c, std::vector<float> a, std::vector<float> b, TensorCoreSum how) {
  return cuda_emu::tensor_core_dot(c, a.data(), b.data(), static_cast<int>(a.size()), how);
}

const float kUlp1 = 0x1p-23f;  // fp32's last place at 1

TEST(TensorCoreSum, TruncatesTheBlocksSumTowardZero) {
  // 1 + 1.5 ulp: round-to-nearest (ties to even) gives 1 + 2 ulp, the tensor core 1 + 1 ulp
  EXPECT_EQ(dot(1.0f, {1.5f * kUlp1}, {1.0f}, {4, 2}), 1.0f + kUlp1);
  EXPECT_EQ(dot(-1.0f, {-1.5f * kUlp1}, {1.0f}, {4, 2}), -1.0f - kUlp1);  // toward zero
  // the same ulp and a half as three quarters of an ulp and two eighths: summed exactly
  // within the block (2 extra bits keep quarters), then truncated once
  EXPECT_EQ(dot(1.0f, {0.75f * kUlp1, 0.25f * kUlp1, 0.25f * kUlp1, 0.25f * kUlp1},
                {1.0f, 1.0f, 1.0f, 1.0f}, {4, 2}),
            1.0f + kUlp1);
}

TEST(TensorCoreSum, DropsTheBitsBelowTheAlignment) {
  // four quarter-ulps of 1: kept with 2 extra bits (their sum, one ulp, survives), dropped
  // one by one with 1 (each is below the half-ulp grid), and by round-to-nearest fp32 adds
  const std::vector<float> quarters(4, 0.25f * kUlp1), ones(4, 1.0f);
  EXPECT_EQ(dot(1.0f, quarters, ones, {4, 2}), 1.0f + kUlp1);
  EXPECT_EQ(dot(1.0f, quarters, ones, {4, 1}), 1.0f);
  // ... and in blocks of one, each quarter meets the accumulator alone: each is kept, and
  // truncated away with the block's sum
  EXPECT_EQ(dot(1.0f, quarters, ones, {1, 2}), 1.0f);
  // the alignment is to the largest term, the accumulator or a product
  EXPECT_EQ(dot(0x1p-30f, {1.0f, 0x1p-27f}, {1.0f, 1.0f}, {4, 2}), 1.0f);
}

// ---- the probe: D (16 x 8) = C + A (16 x K) B (K x 8) --------------------------------------

constexpr int kRows = 16, kCols = 8, kK = 64;

struct ProbeOperands {
  std::vector<float> a, b, c;  // row-major; a and b hold values of the instruction's type
};

// Values spread over 2^-4 to 2^4 in A and B, whose products then span 2^16, and an
// accumulator up to 2^6: the truncations bite at every block, by amounts that depend on
// the block's make-up, so models of other block sizes or alignments give other bits.
ProbeOperands probe_operands(int significand_bits) {
  std::mt19937 gen(20261207);
  std::uniform_int_distribution<int> exponent(-4, 4), sign(0, 1), c_exponent(0, 6);
  std::uniform_int_distribution<int> fraction(0, (1 << significand_bits) - 1);
  auto value = [&](int e) {
    const float m = 1.0f + std::ldexp(float(fraction(gen)), -significand_bits);
    return (sign(gen) ? -1.0f : 1.0f) * std::ldexp(m, e);
  };
  ProbeOperands p;
  for (int i = 0; i < kRows * kK; ++i) p.a.push_back(value(exponent(gen)));
  for (int i = 0; i < kK * kCols; ++i) p.b.push_back(value(exponent(gen)));
  for (int i = 0; i < kRows * kCols; ++i) p.c.push_back(value(c_exponent(gen)));
  return p;
}

// What a model gives for the probe: per element, the instructions' sums in k order.
using Model = std::function<float(float, const float*, const float*, int)>;

std::vector<float> probe_by(const ProbeOperands& p, int k_per_instruction, const Model& sum) {
  std::vector<float> d(kRows * kCols);
  for (int i = 0; i < kRows; ++i)
    for (int j = 0; j < kCols; ++j) {
      float acc = p.c[i * kCols + j];
      for (int k0 = 0; k0 < kK; k0 += k_per_instruction) {
        float a[16], b[16];
        for (int k = 0; k < k_per_instruction; ++k) {
          a[k] = p.a[i * kK + k0 + k];
          b[k] = p.b[(k0 + k) * kCols + j];
        }
        acc = sum(acc, a, b, k_per_instruction);
      }
      d[i * kCols + j] = acc;
    }
  return d;
}

Model block_model(TensorCoreSum how) {
  return [how](float c, const float* a, const float* b, int k) {
    return cuda_emu::tensor_core_dot(c, a, b, k, how);
  };
}

// The emulation's sums before the model: one IEEE fp32 add after another.
float nearest_fp32(float c, const float* a, const float* b, int k) {
  for (int i = 0; i < k; ++i) c += a[i] * b[i];  // exact products; contraction is off
  return c;
}

struct Candidate {
  std::string name;
  Model sum;
};

std::string name_of(TensorCoreSum how) {
  return "blocks of " + std::to_string(how.block) + ", " + std::to_string(how.extra_bits) +
         " extra bits";
}

std::vector<Candidate> candidates(int k_per_instruction) {
  std::vector<Candidate> all = {{"round-to-nearest fp32 adds", nearest_fp32}};
  for (int block = 1; block <= k_per_instruction; block *= 2)
    for (int extra : {0, 1, 2, 3, 4, 8})
      all.push_back({name_of({block, extra}), block_model({block, extra})});
  return all;
}

// Every other candidate gives other bits than `chosen` somewhere in the probe: so a GPU's
// D equal to the chosen model's is that model's and no other candidate's.
void expect_tells_apart(const ProbeOperands& p, int k_per_instruction, TensorCoreSum chosen) {
  const std::vector<float> want = probe_by(p, k_per_instruction, block_model(chosen));
  for (const Candidate& other : candidates(k_per_instruction)) {
    if (other.name == name_of(chosen)) continue;
    const std::vector<float> got = probe_by(p, k_per_instruction, other.sum);
    int differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
    EXPECT_GT(differ, 0) << other.name << " gives the probe's bits of " << name_of(chosen);
  }
}

TEST(TensorCoreSum, TheProbesOperandsTellTheModelsApart) {
  {
    SCOPED_TRACE("tf32");
    expect_tells_apart(probe_operands(10), 8, cuda_emu::kTf32Sum);
  }
  {
    SCOPED_TRACE("bf16");
    expect_tells_apart(probe_operands(7), 16, cuda_emu::kBf16Sum);
  }
}

#if DDPM_WITH_CUDA
// The GPU's D against the emulation's model; on a difference, the candidates that give the
// GPU's bits.
void expect_the_models_bits(const std::vector<float>& gpu, const ProbeOperands& p,
                            int k_per_instruction, TensorCoreSum model) {
  const std::vector<float> want = probe_by(p, k_per_instruction, block_model(model));
  int differ = 0;
  for (size_t i = 0; i < want.size(); ++i) differ += gpu[i] != want[i];
  if (differ == 0) return;
  std::string matching;
  for (const Candidate& c : candidates(k_per_instruction))
    if (probe_by(p, k_per_instruction, c.sum) == gpu) matching += "\n  " + c.name;
  ADD_FAILURE() << differ << " of " << want.size() << " elements differ from the model's ("
                << name_of(model) << "), e.g. element 0: " << gpu[0] << " against " << want[0]
                << ". The candidates that give all the GPU's bits:"
                << (matching.empty() ? std::string(" none") : matching);
}

void require_hopper_or_emulation() {
#if !DDPM_CUDA_EMULATION
  if (cuda::compute_capability() != 90)
    GTEST_SKIP() << "the model is a Hopper's (sm_90); this device is sm_"
                 << cuda::compute_capability();
#endif
}

TEST(CudaTensorCoreSum, Tf32SumsAreTheModels) {
  REQUIRE_GPU();
  require_hopper_or_emulation();
  if (::testing::Test::IsSkipped()) return;
  const ProbeOperands p = probe_operands(10);
  test::OnDevice<float> a(p.a), b(p.b), c(p.c), d(kRows * kCols);
  cuda::tensor_core_probe_tf32(a.ptr, b.ptr, c.ptr, d.ptr, kK);
  expect_the_models_bits(d.get(), p, 8, cuda_emu::kTf32Sum);
}

TEST(CudaTensorCoreSum, Bf16SumsAreTheModels) {
  REQUIRE_GPU();
  require_hopper_or_emulation();
  if (::testing::Test::IsSkipped()) return;
  const ProbeOperands p = probe_operands(7);
  std::vector<uint16_t> a_bits, b_bits;
  for (float v : p.a) a_bits.push_back(bf16_bits_from_float(v));
  for (float v : p.b) b_bits.push_back(bf16_bits_from_float(v));
  test::OnDevice<uint16_t> a(a_bits), b(b_bits);
  test::OnDevice<float> c(p.c), d(kRows * kCols);
  cuda::tensor_core_probe_bf16(a.ptr, b.ptr, c.ptr, d.ptr, kK);
  expect_the_models_bits(d.get(), p, 16, cuda_emu::kBf16Sum);
}

TEST(CudaTensorCoreSum, TheProbeRefusesAKItsInstructionsDoNotTile) {
  REQUIRE_GPU();
  test::OnDevice<uint16_t> a(size_t(kRows) * 24), b(size_t(24) * kCols);
  test::OnDevice<float> c(kRows * kCols), d(kRows * kCols), af(size_t(kRows) * 12),
      bf(size_t(12) * kCols);
  test::expect_error([&] { cuda::tensor_core_probe_bf16(a.ptr, b.ptr, c.ptr, d.ptr, 24); },
                     {"multiple of 16", "got 24"});
  test::expect_error([&] { cuda::tensor_core_probe_tf32(af.ptr, bf.ptr, c.ptr, d.ptr, 12); },
                     {"multiple of 8", "got 12"});
  test::expect_error([&] { cuda::tensor_core_probe_tf32(af.ptr, bf.ptr, c.ptr, d.ptr, 2048); },
                     {"up to 1024", "got 2048"});
}
#endif

}  // namespace
}  // namespace ddpm
