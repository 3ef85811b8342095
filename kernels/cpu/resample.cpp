#include "kernels/cpu/resample.h"

namespace ddpm::cpu {

template <class T>
void upsample_nearest2x_forward(const UpsampleShape& s, const T* x, T* y) {
  const int64_t oh_n = 2 * s.h, ow_n = 2 * s.w;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.n * oh_n; ++row) {
    const int64_t n = row / oh_n, oh = row % oh_n;
    for (int64_t ow = 0; ow < ow_n; ++ow) {
      const T* src = x + ((n * s.h + oh / 2) * s.w + ow / 2) * s.c;
      T* dst = y + (row * ow_n + ow) * s.c;
      for (int64_t c = 0; c < s.c; ++c) dst[c] = src[c];
    }
  }
}

template <class T>
void upsample_nearest2x_backward(const UpsampleShape& s, const T* dy, T* dx) {
  const int64_t ow_n = 2 * s.w;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.n * s.h; ++row) {
    const int64_t n = row / s.h, ih = row % s.h;
    for (int64_t iw = 0; iw < s.w; ++iw) {
      T* d = dx + (row * s.w + iw) * s.c;
      for (int dh = 0; dh < 2; ++dh)
        for (int dw = 0; dw < 2; ++dw) {
          const T* g = dy + ((n * 2 * s.h + 2 * ih + dh) * ow_n + 2 * iw + dw) * s.c;
          for (int64_t c = 0; c < s.c; ++c) d[c] += g[c];
        }
    }
  }
}

template <class T>
void slice_copy(const SliceShape& s, const T* src, T* dst) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) dst[r * s.dst_ld + c] = src[r * s.src_ld + c];
}

template <class T>
void slice_accumulate(const SliceShape& s, const T* src, T* dst) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) dst[r * s.dst_ld + c] += src[r * s.src_ld + c];
}

#define INSTANTIATE(T)                                                                  \
  template void upsample_nearest2x_forward<T>(const UpsampleShape&, const T*, T*);      \
  template void upsample_nearest2x_backward<T>(const UpsampleShape&, const T*, T*);     \
  template void slice_copy<T>(const SliceShape&, const T*, T*);                         \
  template void slice_accumulate<T>(const SliceShape&, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace ddpm::cpu
