// The CUDA scaffolding: device query, the caching allocator (no cudaMalloc once warm), and
// copies. Skips with the reason when no GPU is present.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"
#include "engine/host_staging.h"
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

// Uploads go through pinned staging blocks (engine/host_staging.h): the host does not wait
// (no host sync counted), the bytes arrive, the caller's memory may change right after the
// call, and a warm loop of the same uploads allocates no more pinned memory.
TEST(CudaScaffold, UploadsAreStagedWithoutAWait) {
  REQUIRE_GPU();
  auto upload_round = [](int round) {
    std::vector<Tensor> up;
    for (const int64_t n : {int64_t(1), int64_t(300), int64_t(70000)}) {
      std::vector<float> host(n);
      for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i * 3 + round);
      up.push_back(Tensor::from_vector<float>(Shape{n}, host, Device::CUDA));
      std::fill(host.begin(), host.end(), -1.0f);  // the staged copy must not see this
    }
    for (const Tensor& t : up) {
      const std::vector<float> back = t.to(Device::CPU).to_vector<float>();
      for (size_t i = 0; i < back.size(); ++i)
        ASSERT_EQ(back[i], static_cast<float>(i * 3 + round)) << t.numel() << " @" << i;
    }
  };
  upload_round(0);
  const StagingStats warm = staging_stats();
  const DeviceWorkCounts before = device_work_counts();
  for (int r = 1; r <= 5; ++r) upload_round(r);
  const DeviceWorkCounts after = device_work_counts();
  const StagingStats end = staging_stats();
  EXPECT_EQ(end.blocks, warm.blocks) << "pinned memory allocated in a warm loop";
  EXPECT_EQ(end.staged - warm.staged, 15);
  EXPECT_EQ(end.waits, warm.waits);
  // 15 uploads and 15 read-backs: only the read-backs wait.
  EXPECT_EQ(after.copies - before.copies, 30u);
  EXPECT_EQ(after.host_syncs - before.host_syncs, 15u);
}
#endif

}  // namespace
}  // namespace ddpm
