// The CUDA scaffolding: device query, the caching allocator (no cudaMalloc once warm), and
// copies. Skips with the reason when no GPU is present.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"
#endif

namespace ddpm {
namespace {

TEST(CudaScaffold, DeviceQueryGivesAReasonOrADescription) {
  if (cuda_available()) {
    EXPECT_NE(cuda_device_description().find("sm_"), std::string::npos);
  } else {
    EXPECT_FALSE(cuda_unavailable_reason().empty());
  }
}

#if DDPM_WITH_CUDA
TEST(CudaScaffold, CachingAllocatorReusesBlocks) {
  REQUIRE_GPU();
  auto& alloc = CudaCachingAllocator::instance();
  // Warm up: one "training step" worth of allocations of assorted sizes.
  auto step = [] {
    Tensor a = Tensor::empty(Shape{128, 32, 32, 3}, DType::F32, Device::CUDA);
    Tensor b = Tensor::empty(Shape{1000}, DType::F32, Device::CUDA);
    Tensor c = Tensor::empty(Shape{3, 5, 7}, DType::F32, Device::CUDA);
    c.zero();
  };
  step();
  const AllocatorStats warm = alloc.stats();
  for (int i = 0; i < 10; ++i) step();
  const AllocatorStats after = alloc.stats();
  EXPECT_EQ(after.device_mallocs, warm.device_mallocs) << "cudaMalloc inside a warm step";
  EXPECT_EQ(after.device_frees, warm.device_frees);
  EXPECT_EQ(CudaCachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CudaCachingAllocator::round_size((1 << 20) + 1), 2u << 20);
}
#endif

}  // namespace
}  // namespace ddpm
