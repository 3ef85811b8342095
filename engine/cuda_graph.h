// A CUDA graph of the engine's work: captured once, launched many times.
//
// Each kernel launch costs the host a few microseconds (argument packing, the driver's
// queue), and a training step of the U-Net queues about 500 of them: at small batches the
// GPU waits for the host. A graph records the stream's work once (cudaStreamBeginCapture),
// and one cudaGraphLaunch then queues all of it. What replays is fixed at capture:
//  - every kernel's arguments, hence every address: the tensors the captured work allocates
//    come from the graph's private memory pool (engine/cuda_allocator.h) and stay reserved
//    for it while the graph lives; inputs that change per replay are written, before each
//    launch, into buffers allocated before the capture (the trainer's step inputs);
//  - every per-step value: read from device memory (kernels/step_inputs.h), never passed
//    as an argument.
// The capture is relaxed-mode (cudaStreamCaptureModeRelaxed): the pool may cudaMalloc a
// block the first time the capture needs it; those calls are not part of the graph. Calls
// that wait for the GPU still fail the capture, and so does any copy to or from the host
// (device_copy refuses them while the stream is captured: the host bytes of a captured
// upload would be read at every replay, long after the caller reused them).
// CUDA builds only; elsewhere capture() is an error.
#pragma once

#include <cstdint>
#include <functional>

namespace ddpm {

// Whether the engine's stream is being captured now (false without CUDA).
bool engine_stream_capturing();

class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Captures what `work` queues on the engine's stream, its allocations from this graph's
  // pool (tensors that outlive `work` keep their blocks: hold them as long as the graph).
  // Nothing runs; launch() runs it. Not twice.
  void capture(const std::function<void()>& work);
  // Queues the captured work on the engine's stream; returns without waiting.
  void launch();
  bool captured() const { return exec_ != nullptr; }
  // The engine's kernel launches recorded in the capture (DDPM_LAUNCH; cuBLAS's own kernels
  // are replayed too but not seen), what each launch() queues in one call.
  uint64_t kernels() const { return kernels_; }
  size_t pool_bytes() const;  // device memory reserved for the graph

 private:
  int64_t pool_ = 0;
  void* exec_ = nullptr;  // cudaGraphExec_t
  uint64_t kernels_ = 0;
};

}  // namespace ddpm
