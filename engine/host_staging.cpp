#if DDPM_WITH_CUDA
#include "engine/host_staging.h"

#include <cstring>
#include <mutex>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"

namespace ddpm {

namespace {

struct Block {
  void* host = nullptr;       // pinned, `capacity` bytes
  size_t capacity = 0;
  cudaEvent_t copied = nullptr;  // recorded after the last copy that read the block
  uint64_t last_use = 0;      // upload number of that copy (the oldest is waited for)
};

class StagingPool {
 public:
  static StagingPool& instance() {
    static StagingPool* pool = new StagingPool();  // never destroyed, as the device allocator
    return *pool;
  }

  Upload upload(void* dst, const void* src, size_t bytes) {
    if (bytes > kLargestStagedUpload) {
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, engine_stream()));
      CUDA_CHECK(cudaStreamSynchronize(engine_stream()));  // src is pageable and the caller's
      return Upload::Synchronous;
    }
    std::lock_guard<std::mutex> lock(mu_);
    bool waited = false;
    Block& b = acquire(bytes, &waited);
    std::memcpy(b.host, src, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, b.host, bytes, cudaMemcpyHostToDevice, engine_stream()));
    CUDA_CHECK(cudaEventRecord(b.copied, engine_stream()));
    b.last_use = ++uploads_;
    ++stats_.staged;
    return waited ? Upload::QueuedAfterWait : Upload::Queued;
  }

  StagingStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  // True when no queued copy reads the block any more; never blocks.
  static bool idle(const Block& b) {
    const cudaError_t s = cudaEventQuery(b.copied);
    if (s == cudaErrorNotReady) {
      // Not an error, but the runtime may keep it as the last one, where the next launch
      // check would find it: clear it (as PyTorch's stream and event queries do).
      (void)cudaGetLastError();
      return false;
    }
    CUDA_CHECK(s);
    return true;
  }

  // The smallest idle block that fits; else a new one; past the cap, the oldest that fits,
  // once its copy is done.
  Block& acquire(size_t bytes, bool* waited) {
    Block* best = nullptr;
    for (Block& b : blocks_)
      if (b.capacity >= bytes && (!best || b.capacity < best->capacity) && idle(b)) best = &b;
    if (best) return *best;
    const size_t capacity = round_up(bytes);
    if (stats_.bytes + capacity > kStagingCapBytes) {
      Block* oldest = nullptr;
      for (Block& b : blocks_)
        if (b.capacity >= bytes && (!oldest || b.last_use < oldest->last_use)) oldest = &b;
      if (oldest) {
        CUDA_CHECK(cudaEventSynchronize(oldest->copied));
        ++stats_.waits;
        *waited = true;
        return *oldest;
      }
    }
    Block b;
    b.capacity = capacity;
    CUDA_CHECK(cudaMallocHost(&b.host, capacity));
    CUDA_CHECK(cudaEventCreateWithFlags(&b.copied, cudaEventDisableTiming));
    blocks_.push_back(b);
    ++stats_.blocks;
    stats_.bytes += capacity;
    return blocks_.back();
  }

  // Powers of two from 4 KiB: a step's uploads (a few bytes to a few MB) share few sizes.
  static size_t round_up(size_t bytes) {
    size_t c = 4096;
    while (c < bytes) c *= 2;
    return c;
  }

  std::mutex mu_;
  std::vector<Block> blocks_;  // pointers into it live only inside upload() (under mu_)
  uint64_t uploads_ = 0;
  StagingStats stats_;
};

}  // namespace

Upload upload_staged(void* device_dst, const void* host_src, size_t bytes) {
  return StagingPool::instance().upload(device_dst, host_src, bytes);
}

StagingStats staging_stats() { return StagingPool::instance().stats(); }

}  // namespace ddpm
#endif  // DDPM_WITH_CUDA
