#include "engine/cuda_graph.h"

#include "engine/check.h"
#include "engine/device.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#endif

namespace ddpm {

#if DDPM_WITH_CUDA

void count_graph_launch();  // engine/device.cpp: feeds device_work_counts()

bool engine_stream_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(engine_stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

CudaGraph::CudaGraph() : pool_(CudaCachingAllocator::instance().create_pool()) {}

CudaGraph::~CudaGraph() {
  if (exec_) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  CudaCachingAllocator::instance().release_pool(pool_);
}

void CudaGraph::capture(const std::function<void()>& work) {
  CHECK(!exec_, "CudaGraph::capture: this graph is captured already");
  const uint64_t launches_before = device_work_counts().launches;
  CUDA_CHECK(cudaStreamBeginCapture(engine_stream(), cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  try {
    PoolScope scope(pool_);
    work();
  } catch (...) {
    (void)cudaStreamEndCapture(engine_stream(), &graph);  // leave the stream usable
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(engine_stream(), &graph);
  CHECK(ended == cudaSuccess, "CUDA graph capture failed: " << cudaGetErrorString(ended)
                                  << " (a call that waits for the GPU, or work on another "
                                  << "stream, inside the captured work)");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  CHECK(made == cudaSuccess, "cudaGraphInstantiate failed: " << cudaGetErrorString(made));
  exec_ = exec;
  kernels_ = device_work_counts().launches - launches_before;
}

void CudaGraph::launch() {
  CHECK(exec_, "CudaGraph::launch before capture");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), engine_stream()));
  count_graph_launch();
}

size_t CudaGraph::pool_bytes() const { return CudaCachingAllocator::instance().pool_bytes(pool_); }

#else  // no CUDA: nothing can be captured

bool engine_stream_capturing() { return false; }
CudaGraph::CudaGraph() = default;
CudaGraph::~CudaGraph() = default;
void CudaGraph::capture(const std::function<void()>&) {
  CHECK(false, "CUDA graphs need a CUDA build");
}
void CudaGraph::launch() { CHECK(false, "CUDA graphs need a CUDA build"); }
size_t CudaGraph::pool_bytes() const { return 0; }

#endif

}  // namespace ddpm
