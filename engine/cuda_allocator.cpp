#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"

#include <algorithm>

#include "engine/cuda_check.h"

namespace ddpm {

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

void* CudaCachingAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = nullptr;
  // Exact size only: a larger cached block would waste memory, and steady-state training
  // requests exactly the sizes it released.
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end()) {
    ptr = it->second;
    free_blocks_.erase(it);
    stats_.bytes_cached -= size;
  } else {
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation && !free_blocks_.empty()) {
      (void)cudaGetLastError();  // out of memory: give the cache back and try once more
      for (auto& block : free_blocks_) CUDA_CHECK(cudaFree(block.second));
      stats_.device_frees += static_cast<int64_t>(free_blocks_.size());
      free_blocks_.clear();
      stats_.bytes_cached = 0;
      status = cudaMalloc(&ptr, size);
    }
    CHECK(status == cudaSuccess, "cudaMalloc of " << size << " bytes failed: "
                                     << cudaGetErrorString(status) << " (in use "
                                     << stats_.bytes_in_use << " bytes)");
    ++stats_.device_mallocs;
  }
  in_use_[ptr] = size;
  stats_.bytes_in_use += size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return ptr;
}

void CudaCachingAllocator::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.find(ptr);
  CHECK(it != in_use_.end(), "CudaCachingAllocator::release of a pointer it did not allocate");
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
  free_blocks_.emplace(size, ptr);
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& block : free_blocks_) CUDA_CHECK(cudaFree(block.second));
  stats_.device_frees += static_cast<int64_t>(free_blocks_.size());
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

AllocatorStats CudaCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace ddpm
#endif  // DDPM_WITH_CUDA
