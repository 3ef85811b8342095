// The engine's launches at shapes too large to emulate, checked against the CUDA runtime's
// launch limits without running (cuda_emu::ScopedDryRun): grid.y and grid.z stop at 65,535,
// so the long dimension of every grid must be x. A megapixel batch (64 x 256 x 256) has
// 4.2M output pixels: 65,536 tiles of 64 rows, one more than grid.y allows.
#include <gtest/gtest.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/diffusion_loss.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/launch.cuh"

namespace ddpm {
namespace {

// Never dereferenced: a dry run checks configurations only.
float* const kFake = reinterpret_cast<float*>(uintptr_t{1} << 20);

TEST(LaunchLimits, ConvolutionsOfAMegapixelBatchFitTheGrid) {
  cuda_emu::ScopedDryRun dry;
  Conv2dShape s;
  s.n = 64;
  s.h = s.w = 256;
  s.c_in = s.c_out = 128;
  for (cuda::ConvAlgo algo :
       {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled, cuda::ConvAlgo::TensorCore}) {
    EXPECT_NO_THROW(cuda::conv2d_forward(s, kFake, kFake, kFake, kFake, algo));
    EXPECT_NO_THROW(
        cuda::conv2d_backward(s, kFake, kFake, kFake, kFake, kFake, kFake, algo, kFake));
  }
}

TEST(LaunchLimits, NormsAndBiasGradientsOfAMegapixelBatchFitTheGrid) {
  cuda_emu::ScopedDryRun dry;
  const GroupNormShape g{64, 256 * 256, 128, 32, 1e-6f};
  EXPECT_NO_THROW(cuda::group_norm_forward(g, kFake, kFake, kFake, kFake, kFake, kFake));
  EXPECT_NO_THROW(
      cuda::group_norm_backward(g, kFake, kFake, kFake, kFake, kFake, kFake, kFake, kFake, kFake));
  EXPECT_NO_THROW(cuda::broadcast_add_backward(BroadcastShape{1, 64 * 256 * 256, 128, false}, kFake,
                                               kFake, kFake));
  EXPECT_NO_THROW(
      cuda::broadcast_add_backward(BroadcastShape{64, 256 * 256, 512, true}, kFake, kFake, kFake));
}

// The fused loss's grid held the batch on y: 70,000 small samples, or a few huge ones.
TEST(LaunchLimits, TheFusedLossFitsAnyBatch) {
  cuda_emu::ScopedDryRun dry;
  const int t[1] = {0};
  DiffusionLossTables<float> tab;
  tab.t = t;
  for (const auto& [n, dim] : {std::pair<int64_t, int64_t>{70000, 3}, {64, 256 * 256 * 3}}) {
    DiffusionLossShape s;
    s.n = n;
    s.dim = dim;
    EXPECT_NO_THROW(cuda::diffusion_corrupt<float>(s, tab, kFake, kFake)) << n;
    EXPECT_NO_THROW(cuda::diffusion_loss<float>(s, tab, kFake, kFake, kFake, kFake, kFake, kFake))
        << n;
  }
}

// The one limit left is a stated one: batch x heads on the fused attention's grid.y.
TEST(LaunchLimits, AttentionStatesItsBatchTimesHeadsLimit) {
  cuda_emu::ScopedDryRun dry;
  EXPECT_NO_THROW(
      cuda::attention_fused_forward(AttentionShape{4096, 64, 256, 8}, kFake, kFake, kFake));
  try {
    cuda::attention_fused_forward(AttentionShape{70000, 4, 8, 1}, kFake, kFake, kFake);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the grid's y extent"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ddpm
