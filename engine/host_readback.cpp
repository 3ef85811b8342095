#include "engine/host_readback.h"

#include "engine/check.h"
#include "engine/device.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#endif

namespace ddpm {

// engine/device.cpp: feed device_work_counts()
void count_late_read();
void count_host_sync();

namespace {
// Kernels and graphs launched so far: what a copy can have queued behind it.
uint64_t work_queued() {
  const DeviceWorkCounts w = device_work_counts();
  return w.launches + w.graph_launches;
}
}  // namespace

HostReadback::~HostReadback() {
#if DDPM_WITH_CUDA
  // Never throws: a pending copy is waited for so the buffer outlives it.
  if (landed_) {
    auto event = static_cast<cudaEvent_t>(landed_);
    if (pending_) (void)cudaEventSynchronize(event);
    (void)cudaEventDestroy(event);
  }
  if (pinned_) (void)cudaFreeHost(pinned_);
#endif
}

void HostReadback::start(const Tensor& values) {
  CHECK(!pending_, "HostReadback::start while a copy is pending (finish() it first)");
  CHECK(values.dtype() == DType::F64 && values.shape().ndim() == 1,
        "HostReadback reads f64 vectors, got " << values.describe());
  count_ = values.numel();
  pending_ = true;
  if (values.device() == Device::CPU) {
    host_ = values.to_vector<double>();
    return;
  }
#if DDPM_WITH_CUDA
  const size_t bytes = static_cast<size_t>(count_) * sizeof(double);
  if (bytes > capacity_) {
    if (pinned_) CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    CUDA_CHECK(cudaMallocHost(&pinned_, bytes));
    capacity_ = bytes;
  }
  if (!landed_) {
    cudaEvent_t event = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    landed_ = event;
  }
  source_ = values;
  launches_at_start_ = work_queued();
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(pinned_, values.data<double>(), bytes,
                                            cudaMemcpyDeviceToHost, engine_stream()));
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(landed_), engine_stream()));
#else
  THROW_ERROR("HostReadback of a CUDA tensor in a build without CUDA");
#endif
}

std::vector<double> HostReadback::finish() {
  CHECK(pending_, "HostReadback::finish without a copy started");
  pending_ = false;
  if (!source_.defined()) return std::move(host_);
#if DDPM_WITH_CUDA
  // With nothing launched since start(), the queue ends at the copy: this wait drains it.
  const bool queued_behind = work_queued() != launches_at_start_;
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(landed_)));
  if (queued_behind)
    count_late_read();
  else
    count_host_sync();
  source_ = Tensor();
  const auto* p = static_cast<const double*>(pinned_);
  return std::vector<double>(p, p + count_);
#else
  return {};
#endif
}

}  // namespace ddpm
