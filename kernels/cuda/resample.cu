// Nearest 2x upsampling and strided block copies (channel concat/split) on the GPU.
//
// Work mapping: one thread per OUTPUT element (the upsample backward: one thread per input
// element, gathering its four gradients), so no two threads write the same address and no
// atomics are needed; consecutive threads touch consecutive channels, so loads and stores
// coalesce along C. Memory-bound.
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/resample.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

// T: the storage, fp32 or bf16 bits (storage.cuh); sums in fp32, a bf16 store rounds once.
template <class T>
__global__ void upsample_kernel(UpsampleShape s, const T* x, T* y) {
  const int64_t ow_n = 2 * s.w, total = s.n * 2 * s.h * ow_n * s.c;
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c, ow = (i / s.c) % ow_n, oh = (i / s.c / ow_n) % (2 * s.h),
                  n = i / s.c / ow_n / (2 * s.h);
    y[i] = x[((n * s.h + oh / 2) * s.w + ow / 2) * s.c + c];
  }
}

// dx = (add ? dx : 0) + the four gradients of the pixel's copies
template <class T>
__global__ void upsample_backward_kernel(UpsampleShape s, const T* dy, T* dx, bool add) {
  const int64_t ow_n = 2 * s.w, total = s.n * s.h * s.w * s.c;
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c, iw = (i / s.c) % s.w, ih = (i / s.c / s.w) % s.h,
                  n = i / s.c / s.w / s.h;
    const int64_t g = ((n * 2 * s.h + 2 * ih) * ow_n + 2 * iw) * s.c + c;
    store_grad(dx, i, load(dy, g) + load(dy, g + s.c) + load(dy, g + ow_n * s.c) +
                          load(dy, g + ow_n * s.c + s.c), add);
  }
}

template <bool kAccumulate, class T>
__global__ void slice_kernel(SliceShape s, const T* src, T* dst) {
  DDPM_GRID_STRIDE(i, s.rows * s.cols) {
    const int64_t r = i / s.cols, c = i % s.cols;
    if (kAccumulate) {
      store(dst, r * s.dst_ld + c, load(dst, r * s.dst_ld + c) + load(src, r * s.src_ld + c));
    } else {
      dst[r * s.dst_ld + c] = src[r * s.src_ld + c];
    }
  }
}

template <class T>
void upsample_forward(const UpsampleShape& s, const T* x, T* y) {
  const int64_t total = s.n * 4 * s.h * s.w * s.c;
  if (total == 0) return;
  DDPM_LAUNCH(upsample_kernel<T>, grid_for(total), kThreads)(s, x, y);
}

template <class T>
void upsample_backward(const UpsampleShape& s, const T* dy, T* dx, GradWrite dx_write) {
  const int64_t total = s.n * s.h * s.w * s.c;
  if (total == 0) return;
  DDPM_LAUNCH(upsample_backward_kernel<T>, grid_for(total), kThreads)(
      s, dy, dx, dx_write == GradWrite::Accumulate);
}

template <bool kAccumulate, class T>
void slice(const SliceShape& s, const T* src, T* dst) {
  if (s.rows * s.cols == 0) return;
  DDPM_LAUNCH((slice_kernel<kAccumulate, T>), grid_for(s.rows * s.cols), kThreads)(s, src, dst);
}

}  // namespace

void upsample_nearest2x_forward(const UpsampleShape& s, const float* x, float* y) {
  upsample_forward(s, x, y);
}
void upsample_nearest2x_forward(const UpsampleShape& s, const uint16_t* x, uint16_t* y) {
  upsample_forward(s, x, y);
}
void upsample_nearest2x_backward(const UpsampleShape& s, const float* dy, float* dx,
                                 GradWrite dx_write) {
  upsample_backward(s, dy, dx, dx_write);
}
void upsample_nearest2x_backward(const UpsampleShape& s, const uint16_t* dy, uint16_t* dx,
                                 GradWrite dx_write) {
  upsample_backward(s, dy, dx, dx_write);
}
void slice_copy(const SliceShape& s, const float* src, float* dst) { slice<false>(s, src, dst); }
void slice_copy(const SliceShape& s, const uint16_t* src, uint16_t* dst) {
  slice<false>(s, src, dst);
}
void slice_accumulate(const SliceShape& s, const float* src, float* dst) {
  slice<true>(s, src, dst);
}
void slice_accumulate(const SliceShape& s, const uint16_t* src, uint16_t* dst) {
  slice<true>(s, src, dst);
}

}  // namespace ddpm::cuda
