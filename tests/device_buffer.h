// Device copies of host vectors, each in its own cudaMalloc of exactly its size (freed with
// the test), for kernel tests that call the kernels' entry points directly. The engine's
// caching allocator rounds sizes up to 512 bytes, so a kernel that reads or writes a few
// elements past an operand would go unnoticed in a tensor; here it is an AddressSanitizer
// error under the CPU emulation (its cudaMalloc is an exact host allocation) and a
// compute-sanitizer memcheck error on a GPU. Needs a CUDA build.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "engine/cuda_check.h"

namespace ddpm::test {

template <class T>
struct OnDevice {
  T* ptr = nullptr;
  size_t n = 0;
  explicit OnDevice(const std::vector<T>& host) : n(host.size()) {
    CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T)));
    CUDA_CHECK(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit OnDevice(size_t count) : OnDevice(std::vector<T>(count)) {}
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;
  ~OnDevice() { (void)cudaFree(ptr); }
  std::vector<T> get() const {
    std::vector<T> host(n);
    CUDA_CHECK(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

}  // namespace ddpm::test
