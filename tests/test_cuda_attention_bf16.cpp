// The bf16 flash-attention forward (kernels/cuda/attention_flash_bf16.cu) against the CPU
// reference, with a bound derived from what the kernel does to the numbers:
//  - q, k, v are rounded to bf16 on the way into shared memory, so the reference runs in
//    double on the same rounded values; S = q.k / sqrt(d) is then exact products summed in
//    fp32 on the GPU (~1e-7 relative).
//  - P is rounded to bf16 (relative error at most 2^-8) where it multiplies V, while the
//    row sum l adds the unrounded fp32 P. So out_i = sum_j p_ij (1 + e_ij) v_j with
//    |e_ij| <= 2^-8: each element is within 2^-8 sum_j p_ij |v_j| of the reference, which
//    the test computes by running the reference once more on |v| (same q, k: same p).
//    Plus fp32 slack (exp, the sums: 1e-5 of the same sum, 1e-6 absolute).
//  - lse is fp32 softmax statistics only: 1e-5 relative.
// A wrong fragment index, a key tile misaligned with its mask, or a P paired with the wrong V
// rows is off by the size of the output itself. Shapes: partial query and key tiles, every
// supported head dim (32, 64, 128, 256), several heads, the CIFAR-10 model's single head of
// 256 at L = 256, and L = 1024 with 4 heads of 32. Skips without a GPU; emulated in CI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/attention.cuh"
#endif

namespace ddpm {
namespace {

struct Case {
  int64_t b, l, c, heads;
};

std::string describe(const Case& c) {
  return "B" + std::to_string(c.b) + " L" + std::to_string(c.l) + " C" + std::to_string(c.c) +
         " heads " + std::to_string(c.heads);
}

std::vector<Case> cases() {
  std::vector<Case> all = {{2, 9, 32, 1},    // d 32: one partial query tile, one key tile
                           {1, 70, 128, 2},  // d 64: 2 query tiles, 2 key tiles, both partial
                           {2, 37, 128, 1},  // d 128
                           {1, 100, 256, 1}, // d 256: 32-key tiles, 4 of them
                           {1, 130, 96, 3},  // d 32, 3 heads, 3 query tiles
                           {1, 256, 256, 1}}; // the CIFAR-10 U-Net's 16x16 attention
  if (!test::small_shapes_only()) {
    all.push_back({4, 256, 256, 1});   // ... at a larger batch
    all.push_back({1, 1024, 128, 4});  // a 32x32 map, 4 heads of 32
  }
  return all;
}

#if DDPM_WITH_CUDA
struct GpuRun {
  std::vector<float> out, lse;
};

GpuRun run_gpu(const AttentionShape& s, const std::vector<float>& qkv) {
  const Tensor x = Tensor::from_vector(Shape{s.b, s.l, 3 * s.c}, qkv, Device::CUDA);
  const Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{s.b, s.heads, s.l}, DType::F32, Device::CUDA);
  cuda::attention_flash_bf16_forward(s, x.data<float>(), out.data<float>(), lse.data<float>());
  return {out.to(Device::CPU).to_vector<float>(), lse.to(Device::CPU).to_vector<float>()};
}
#endif

TEST(CudaAttentionBf16, ForwardIsTheReferenceWithinBf16Rounding) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  uint64_t stream = 40;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    AttentionShape s;
    s.b = c.b;
    s.l = c.l;
    s.c = c.c;
    s.heads = c.heads;
    ASSERT_TRUE(cuda::attention_flash_bf16_supports(s));
    const std::vector<float> qkv =
        test::random_tensor(Shape{s.b * s.l * 3 * s.c}, stream++, DType::F32, 1.5)
            .to_vector<float>();
    // The reference on the rounded operands, in double; and once more with |v| for the bound.
    std::vector<double> rounded(qkv.size()), magnitude(qkv.size());
    for (size_t i = 0; i < qkv.size(); ++i) {
      rounded[i] = round_to_bf16(qkv[i]);
      const bool is_v = static_cast<int64_t>(i % (3 * s.c)) >= 2 * s.c;
      magnitude[i] = is_v ? std::abs(rounded[i]) : rounded[i];
    }
    std::vector<double> ref(s.b * s.l * s.c), ref_lse(s.b * s.heads * s.l), mag(ref.size()),
        mag_lse(ref_lse.size());
    cpu::attention_forward<double>(s, rounded.data(), ref.data(), ref_lse.data());
    cpu::attention_forward<double>(s, magnitude.data(), mag.data(), mag_lse.data());

    const GpuRun gpu = run_gpu(s, qkv);
    double worst = 0;  // the largest error as a fraction of its bound
    for (size_t i = 0; i < ref.size(); ++i) {
      const double bound = (std::ldexp(1.0, -8) + 1e-5) * mag[i] + 1e-6;
      const double err = std::abs(gpu.out[i] - ref[i]);
      worst = std::max(worst, err / bound);
      ASSERT_LE(err, bound) << "out element " << i << ": " << gpu.out[i] << " vs " << ref[i];
    }
    for (size_t i = 0; i < ref_lse.size(); ++i)
      ASSERT_NEAR(gpu.lse[i], ref_lse[i], 1e-5 * std::max(1.0, std::abs(ref_lse[i])))
          << "lse element " << i;
    std::printf("%s: worst output error %.2f of its bf16 bound\n", describe(c).c_str(), worst);
    // The kernel has no atomics and a fixed order: the same bits every run.
    const GpuRun again = run_gpu(s, qkv);
    EXPECT_EQ(again.out, gpu.out);
    EXPECT_EQ(again.lse, gpu.lse);
  }
#endif
}

TEST(CudaAttentionBf16, UnsupportedHeadDimsAreRefusedWithTheReason) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  AttentionShape s;
  s.b = 1;
  s.l = 8;
  s.c = 48;
  s.heads = 1;
  EXPECT_FALSE(cuda::attention_flash_bf16_supports(s));
  const Tensor x = Tensor::zeros(Shape{1, 8, 144}, DType::F32, Device::CUDA);
  const Tensor out = Tensor::empty(Shape{1, 8, 48}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{1, 1, 8}, DType::F32, Device::CUDA);
  test::expect_error(
      [&] {
        cuda::attention_flash_bf16_forward(s, x.data<float>(), out.data<float>(),
                                           lse.data<float>());
      },
      {"head dim 48", "32, 64, 128 or 256"});
#endif
}

}  // namespace
}  // namespace ddpm
