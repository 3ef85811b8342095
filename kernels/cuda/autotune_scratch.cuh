// What the autotuners share for their operands (conv2d_autotune.cu: v4 or cuDNN per
// convolution pass; attention_autotune.cu: the flash pairs or cuBLAS's GEMMs per attention
// shape): scratch buffers filled with a fixed pattern, and whether a capture forbids timing
// now. How a candidate is checked and timed: autotune_check.cuh. Internal to kernels/cuda.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda::autotune {

// x[i] = a fixed pattern of values in [-0.5, 0.5): no zeros-only or denormal inputs a kernel
// might run faster on. T: float, or uint16_t (bf16 bits, the pattern rounded).
template <class T>
__global__ void fill_pattern_kernel(int64_t n, T* x) {
  DDPM_GRID_STRIDE(i, n) store(x, i, 0.5f - static_cast<float>((i * 37) % 101) / 101.0f);
}

// A device buffer for the timing runs, freed when the choice is made: room for `floats`
// floats, or as many bf16 elements.
class Scratch {
 public:
  explicit Scratch(int64_t floats) {
    if (floats > 0) CUDA_CHECK(cudaMalloc(&p_, floats * sizeof(float)));
  }
  ~Scratch() { cudaFree(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T = float>
  T* get() const {
    return static_cast<T*>(p_);
  }
  // The first n elements of type T filled with the pattern.
  template <class T = float>
  T* filled(int64_t n) const {
    DDPM_LAUNCH(fill_pattern_kernel<T>, grid_for(n), kThreads)(n, get<T>());
    return get<T>();
  }

 private:
  void* p_ = nullptr;
};

// True while the engine's stream is being captured into a CUDA graph: an autotuner
// allocates and waits, which a capture cannot hold, so it must not run then.
inline bool capturing() {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(engine_stream(), &capture));
  return capture != cudaStreamCaptureStatusNone;
}

}  // namespace ddpm::cuda::autotune
