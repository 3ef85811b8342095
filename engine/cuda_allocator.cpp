#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"

#include <algorithm>

#include "engine/cuda_check.h"

namespace ddpm {

namespace {
thread_local PoolId t_current_pool = 0;  // PoolScope's
}  // namespace

PoolScope::PoolScope(PoolId pool) : previous_(t_current_pool) { t_current_pool = pool; }
PoolScope::~PoolScope() { t_current_pool = previous_; }

CudaCachingAllocator& CudaCachingAllocator::instance() {
  static CudaCachingAllocator* allocator = new CudaCachingAllocator();  // never destroyed:
  return *allocator;  // tensors freed during static destruction still find it
}

size_t CudaCachingAllocator::round_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(1) << 20;
  if (bytes == 0) bytes = 1;
  if (bytes <= kLarge) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

CudaCachingAllocator::FreeList& CudaCachingAllocator::free_list(PoolId pool) {
  if (pool == 0) return free_blocks_;
  const auto it = pool_free_.find(pool);
  return it == pool_free_.end() ? free_blocks_ : it->second;
}

void* CudaCachingAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  const PoolId pool = t_current_pool;
  CHECK(pool == 0 || pool_free_.count(pool), "allocation from memory pool " << pool
                                                 << ", which was released");
  FreeList& blocks = free_list(pool);
  void* ptr = nullptr;
  // Exact size only: a larger cached block would waste memory, and steady-state training
  // requests exactly the sizes it released.
  auto it = blocks.find(size);
  if (it != blocks.end()) {
    ptr = it->second;
    blocks.erase(it);
    stats_.bytes_cached -= size;
  } else {
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation && !free_blocks_.empty()) {
      (void)cudaGetLastError();  // out of memory: give the cache back and try once more
      free_shared_cache();
      status = cudaMalloc(&ptr, size);
    }
    CHECK(status == cudaSuccess, "cudaMalloc of " << size << " bytes failed: "
                                     << cudaGetErrorString(status) << " (in use "
                                     << stats_.bytes_in_use << " bytes)");
    ++stats_.device_mallocs;
    if (pool != 0) pool_bytes_[pool] += size;
  }
  in_use_[ptr] = Block{size, pool};
  stats_.bytes_in_use += size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return ptr;
}

void CudaCachingAllocator::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.find(ptr);
  CHECK(it != in_use_.end(), "CudaCachingAllocator::release of a pointer it did not allocate");
  const Block block = it->second;
  in_use_.erase(it);
  stats_.bytes_in_use -= block.size;
  stats_.bytes_cached += block.size;
  free_list(block.pool).emplace(block.size, ptr);
}

PoolId CudaCachingAllocator::create_pool() {
  std::lock_guard<std::mutex> lock(mutex_);
  const PoolId pool = next_pool_++;
  pool_free_[pool];
  pool_bytes_[pool] = 0;
  return pool;
}

void CudaCachingAllocator::release_pool(PoolId pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = pool_free_.find(pool);
  CHECK(it != pool_free_.end(), "release of memory pool " << pool << ", which does not exist");
  free_blocks_.insert(it->second.begin(), it->second.end());
  pool_free_.erase(it);
  pool_bytes_.erase(pool);
}

size_t CudaCachingAllocator::pool_bytes(PoolId pool) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = pool_bytes_.find(pool);
  return it == pool_bytes_.end() ? 0 : it->second;
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  free_shared_cache();
}

void CudaCachingAllocator::free_shared_cache() {
  for (auto& block : free_blocks_) {
    CUDA_CHECK(cudaFree(block.second));
    stats_.bytes_cached -= block.first;
  }
  stats_.device_frees += static_cast<int64_t>(free_blocks_.size());
  free_blocks_.clear();
}

AllocatorStats CudaCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CudaCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

}  // namespace ddpm
#endif  // DDPM_WITH_CUDA
