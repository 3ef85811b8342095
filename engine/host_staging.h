// Uploads that never make the host wait for the GPU (used by device_copy, engine/device.h).
//
// cudaMemcpy from ordinary (pageable) host memory to the device first waits for all earlier
// work on the stream to finish: every batch, timestep vector or table a training step sent
// up drained the GPU's queue. cudaMemcpyAsync from page-locked (pinned) memory does not
// wait; the DMA engine reads the pinned bytes when the stream reaches the copy. So an
// upload here
//   1. takes a pinned staging block whose previous copy has completed (cudaEventQuery on
//      the event recorded after it; never blocks), or allocates a new one,
//   2. memcpys the caller's bytes into it (the caller may free or reuse its memory at once),
//   3. queues cudaMemcpyAsync from the block on the engine's stream and records the block's
//      event after it.
// Blocks are kept and reused, so a warm training loop allocates no pinned memory. The pool
// is capped (kStagingCapBytes): past it, the upload waits for the oldest large-enough block
// (counted as a host sync). Uploads above kLargestStagedUpload (start-up data: the whole
// dataset, checkpoints) go through cudaMemcpy as before.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ddpm {

constexpr size_t kLargestStagedUpload = size_t(64) << 20;
constexpr size_t kStagingCapBytes = size_t(256) << 20;

struct StagingStats {
  int64_t blocks = 0;         // pinned blocks held
  size_t bytes = 0;           // their total size
  int64_t staged = 0;         // uploads that went through a block
  int64_t waits = 0;          // uploads that had to wait for a block (the cap was reached)
};

// Queues the upload of host_src[0, bytes) to device_dst and says whether the host waited.
// CUDA builds only.
enum class Upload {
  Queued,            // staged; the host did not wait
  QueuedAfterWait,   // staged, once the oldest block's copy had finished (cap reached)
  Synchronous,       // too large to stage: cudaMemcpy, which waits
};
Upload upload_staged(void* device_dst, const void* host_src, size_t bytes);
StagingStats staging_stats();

}  // namespace ddpm
