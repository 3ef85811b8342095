// Storage conversions on the GPU: one thread per element in a grid-stride loop, memory-bound
// (each element read once and written once; 6 bytes per element for a conversion, 8-10 for
// an accumulation). The loads and stores are storage.cuh's, so the rounding is kernels/bf16.h's,
// the CPU's bit for bit.
#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

__global__ void from_bf16_bits_kernel(int64_t n, const uint16_t* x, float* y) {
  DDPM_GRID_STRIDE(i, n) y[i] = load(x, i);
}

template <class X, class Y>
__global__ void axpy_stored_kernel(int64_t n, float alpha, const X* x, Y* y) {
  DDPM_GRID_STRIDE(i, n) store(y, i, load(y, i) + alpha * load(x, i));
}

template <class X, class Y>
void axpy_any(int64_t n, float alpha, const X* x, Y* y) {
  if (n > 0) DDPM_LAUNCH((axpy_stored_kernel<X, Y>), grid_for(n), kThreads)(n, alpha, x, y);
}

}  // namespace

void from_bf16_bits(int64_t n, const uint16_t* x, float* y) {
  if (n > 0) DDPM_LAUNCH(from_bf16_bits_kernel, grid_for(n), kThreads)(n, x, y);
}
void axpy_stored(int64_t n, float alpha, const uint16_t* x, float* y) { axpy_any(n, alpha, x, y); }
void axpy_stored(int64_t n, float alpha, const float* x, uint16_t* y) { axpy_any(n, alpha, x, y); }
void axpy_stored(int64_t n, float alpha, const uint16_t* x, uint16_t* y) {
  axpy_any(n, alpha, x, y);
}

}  // namespace ddpm::cuda
