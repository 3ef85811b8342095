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

namespace {
// Calls f(output pixel, phase p, input pixel) for every pixel of the four phases.
template <class F>
void for_each_phase_pixel(const UpsampleShape& s, F f) {
  const int64_t ow_n = 2 * s.w;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.n * s.h; ++row)  // row = n * H + i
    for (int a = 0; a < 2; ++a)
      for (int64_t j = 0; j < s.w; ++j)
        for (int b = 0; b < 2; ++b) f((2 * row + a) * ow_n + 2 * j + b, 2 * a + b, row * s.w + j);
}
}  // namespace

template <class T>
void interleave_phases_forward(const UpsampleShape& s, const T* const (&ys)[4], T* y) {
  for_each_phase_pixel(s, [&](int64_t out, int p, int64_t in) {
    for (int64_t c = 0; c < s.c; ++c) y[out * s.c + c] = ys[p][in * s.c + c];
  });
}

template <class T>
void interleave_phases_backward(const UpsampleShape& s, const T* dy, T* const (&dys)[4]) {
  for_each_phase_pixel(s, [&](int64_t out, int p, int64_t in) {
    for (int64_t c = 0; c < s.c; ++c) dys[p][in * s.c + c] = dy[out * s.c + c];
  });
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
  template void interleave_phases_forward<T>(const UpsampleShape&, const T* const(&)[4], T*); \
  template void interleave_phases_backward<T>(const UpsampleShape&, const T*, T* const(&)[4]); \
  template void slice_copy<T>(const SliceShape&, const T*, T*);                         \
  template void slice_accumulate<T>(const SliceShape&, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace ddpm::cpu
