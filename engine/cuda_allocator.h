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
//
// Private pools, for CUDA graphs (engine/cuda_graph.h). A captured graph replays kernels that
// read and write the addresses they had when captured, so those blocks must stay the
// graph's between replays: nothing else may be handed them. While a PoolScope is alive on a
// thread, that thread's allocations come from the scope's pool, and a block returns to the
// pool it came from whenever it is released. Blocks freed during the capture are reused
// within it, which is safe for the same reason as above (one stream, replayed in capture
// order). release_pool() hands the pool's free blocks to the shared cache; blocks of a
// released pool that are still in use go there when they are freed.
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

using PoolId = int64_t;  // 0: the shared cache

class CudaCachingAllocator {
 public:
  static CudaCachingAllocator& instance();

  void* allocate(size_t bytes);
  void release(void* ptr);
  void empty_cache();  // cudaFree every block of the shared cache
  AllocatorStats stats() const;
  void reset_peak();  // peak_bytes_in_use = bytes_in_use: the peak of what follows
  static size_t round_size(size_t bytes);

  PoolId create_pool();
  void release_pool(PoolId pool);
  size_t pool_bytes(PoolId pool) const;  // the pool's blocks, in use or free

 private:
  friend class PoolScope;
  using FreeList = std::multimap<size_t, void*>;  // rounded size -> block
  struct Block {
    size_t size = 0;
    PoolId pool = 0;
  };
  FreeList& free_list(PoolId pool);  // the shared cache's when the pool is gone
  void free_shared_cache();          // cudaFree the shared cache's blocks (mutex held)
  mutable std::mutex mutex_;
  FreeList free_blocks_;                        // the shared cache
  std::map<PoolId, FreeList> pool_free_;        // private pools' free blocks
  std::map<PoolId, size_t> pool_bytes_;         // private pools' blocks, in use or free
  PoolId next_pool_ = 1;
  std::unordered_map<void*, Block> in_use_;
  AllocatorStats stats_;
};

// This thread's allocations come from `pool` for the scope's lifetime (scopes nest).
class PoolScope {
 public:
  explicit PoolScope(PoolId pool);
  ~PoolScope();
  PoolScope(const PoolScope&) = delete;
  PoolScope& operator=(const PoolScope&) = delete;

 private:
  PoolId previous_;
};

}  // namespace ddpm
