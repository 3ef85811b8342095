// Reading a result back to the host without draining the GPU's queue: the other half of
// engine/host_staging.h.
//
// Tensor::to(Device::CPU) is a cudaMemcpy, which returns when the bytes are on the host: the
// host waits for every kernel queued before the copy, and the GPU then idles until the host
// has queued more. A HostReadback instead
//   start():  queues cudaMemcpyAsync from the tensor into its own pinned buffer and records
//             an event after it; returns at once;
//   finish(): waits for that event (cudaEventSynchronize) and returns the values.
// Call finish() after queueing the next piece of work (the trainer: step s+1), and the GPU
// works on that while the host waits for the copy: the wait no longer drains the queue. The
// buffer and the event are allocated once, on the first start() of a given size or more,
// so a warm loop allocates nothing. On the CPU both calls are plain copies.
//
// device_work_counts() counts each finish() of a GPU copy: as one `late_reads` when kernels
// or graphs were launched between start() and finish() (the GPU has that work to do while
// the host waits), else as one `host_syncs` (the wait drains the queue, as a cudaMemcpy
// would).
// Whether the host actually blocks depends on timing; the counts do not, so tests pin them.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

class HostReadback {
 public:
  HostReadback() = default;
  ~HostReadback();
  HostReadback(const HostReadback&) = delete;
  HostReadback& operator=(const HostReadback&) = delete;

  // Queues the copy of `values` (an f64 vector on any device). Not while one is pending.
  void start(const Tensor& values);
  bool pending() const { return pending_; }
  // The values start() copied; waits for the copy when it has not landed yet.
  std::vector<double> finish();

 private:
  bool pending_ = false;
  Tensor source_;             // kept alive until the copy has landed
  int64_t count_ = 0;         // doubles in flight
  std::vector<double> host_;  // CPU sources: copied at start()
  void* pinned_ = nullptr;    // GPU sources: the copy's destination
  size_t capacity_ = 0;
  uint64_t launches_at_start_ = 0;
  void* landed_ = nullptr;    // cudaEvent_t recorded after the copy
};

}  // namespace ddpm
