// A caching allocator for device memory. cudaMalloc/cudaFree synchronise the device and cost
// tens of microseconds each; a training step allocates the same sizes every iteration, so
// freed blocks are kept in a free list keyed by (rounded) size and handed out again.
// Sizes are rounded up to 512 bytes (keeps every block 512-byte aligned for vector loads)
// and, above 1 MiB, to a multiple of 1 MiB so nearby sizes share blocks.
// Single stream: a block freed by the host may be handed out again at once, which is safe
// because every kernel, copy and memset of the engine runs on one stream
// (engine/cuda_stream.h), so the next user of the block is ordered after every earlier use.
// DDPM_LAUNCH (kernels/cuda/launch.cuh) refuses a launch on any other stream. Work on a
// second stream (e.g. a copy stream for batches) needs this allocator to become stream-aware
// first: record an event on the stream at free and reuse the block only once the event
// completes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace ddpm {

struct AllocatorStats {
  int64_t device_mallocs = 0;   // calls to cudaMalloc so far
  int64_t device_frees = 0;     // calls to cudaFree so far
  size_t bytes_in_use = 0;      // handed out and not yet released
  size_t bytes_cached = 0;      // held in free lists
  size_t peak_bytes_in_use = 0;
};

class CudaCachingAllocator {
 public:
  static CudaCachingAllocator& instance();

  void* allocate(size_t bytes);
  void release(void* ptr);
  void empty_cache();  // cudaFree every cached block
  AllocatorStats stats() const;
  static size_t round_size(size_t bytes);

 private:
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;   // rounded size -> block
  std::unordered_map<void*, size_t> in_use_;   // block -> rounded size
  AllocatorStats stats_;
};

}  // namespace ddpm
