// Where a tensor's bytes live, and the few primitives the engine needs on each device:
// allocate, free, copy, zero, synchronise. On the GPU, memory comes from a caching allocator
// (engine/cuda_allocator.h) so a training step makes no cudaMalloc/cudaFree once warm.
// In a CPU-only build (no DDPM_WITH_CUDA), every CUDA request fails with a clear message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ddpm {

enum class Device { CPU, CUDA };

const char* device_name(Device d);

// True when the build has CUDA and a usable GPU is present (queried once, then cached).
bool cuda_available();
// Why cuda_available() is false ("built without CUDA", "no CUDA device: ..."), for skips.
std::string cuda_unavailable_reason();
// One line naming the GPU: "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)".
std::string cuda_device_description();

void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* ptr, size_t bytes);
// A debugging aid every test runs with (tests/main.cpp, the emulation's main and the ctest
// properties of the ddpm program's tests set DDPM_POISON_MEMORY=1): while on, device_alloc
// fills every block it hands out with 0xff bytes, which read as NaN in f32 and in bf16, on the
// host and on the GPU, whether the CUDA caching allocator's block is new or reused. A kernel
// that reads memory before writing it (a first gradient "written outright" that misses
// elements, a padding assumed to be zero) then gives NaNs instead of the stale values of the
// block's last user, which are often right enough to pass. The fill is queued on the engine's
// stream, ahead of every use of the block (all of which are on that stream:
// engine/cuda_stream.h), and not counted among the engine's memsets (device_work_counts): it is
// not the engine's work, and the counts stay those of a run without it. Off unless
// DDPM_POISON_MEMORY is 1 (0 or unset: off; anything else is an error naming the value).
// set_poison_new_memory overrides it (tests).
bool poison_new_memory();
void set_poison_new_memory(bool on);
// Copies between any two devices (host<->device, device<->device, host<->host).
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void device_zero(void* ptr, Device d, size_t bytes);
// How much memory the device has: the host's physical memory, or the GPU's (0 when unknown).
size_t device_memory_bytes(Device d);
// The most device memory the caching allocator has handed out at once (0 without CUDA).
size_t cuda_peak_bytes_in_use();
// Restarts that peak from the bytes in use now (a benchmark's peak of one configuration).
void cuda_reset_peak_bytes_in_use();

// GPU work the engine has issued since the start: kernel launches (every launch checked
// with CUDA_CHECK_LAUNCH; cuBLAS / cuDNN calls are not seen), memsets, copies, and host
// syncs: the times the host waited for the GPU (a copy to host memory, which cudaMemcpy
// performs synchronously; an upload too large to stage; device_synchronize). Uploads are
// staged through pinned memory and queued without a wait (engine/host_staging.h). Late
// reads: results copied back asynchronously and read after more work was queued behind
// them (engine/host_readback.h), so the GPU's queue does not drain while the host waits.
// Graph launches: CUDA graphs launched (engine/cuda_graph.h); the kernels a graph replays
// are not counted again (launches counts those issued when it was captured).
// Benchmarks and the trainer's log difference two readings to report them per step.
struct DeviceWorkCounts {
  uint64_t launches = 0, memsets = 0, copies = 0, host_syncs = 0, late_reads = 0,
           graph_launches = 0;
};
// The work between two readings (later - earlier), count by count.
inline DeviceWorkCounts operator-(const DeviceWorkCounts& later, const DeviceWorkCounts& earlier) {
  return {later.launches - earlier.launches,     later.memsets - earlier.memsets,
          later.copies - earlier.copies,         later.host_syncs - earlier.host_syncs,
          later.late_reads - earlier.late_reads, later.graph_launches - earlier.graph_launches};
}
// Two pieces of work together (a step's queueing and its read-back).
inline DeviceWorkCounts operator+(const DeviceWorkCounts& a, const DeviceWorkCounts& b) {
  return {a.launches + b.launches,     a.memsets + b.memsets,
          a.copies + b.copies,         a.host_syncs + b.host_syncs,
          a.late_reads + b.late_reads, a.graph_launches + b.graph_launches};
}
DeviceWorkCounts device_work_counts();

// An NVTX range (named span on the Nsight Systems / Compute timeline) for its lifetime;
// nothing without CUDA.
class ProfileRange {
 public:
  explicit ProfileRange(const char* name);
  ~ProfileRange();
  ProfileRange(const ProfileRange&) = delete;
  ProfileRange& operator=(const ProfileRange&) = delete;
};

// Waits for all queued GPU work (no-op on the CPU).
void device_synchronize(Device d);

}  // namespace ddpm
