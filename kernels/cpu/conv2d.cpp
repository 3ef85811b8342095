#include "kernels/cpu/conv2d.h"

#include <algorithm>

#include "kernels/cpu/gemm.h"

namespace ddpm::cpu {

namespace {

// The run of output columns ow whose input column iw = ow*stride - pad_left + kw lies in
// [0, W): returns {ow0, count} (count 0 if none).
struct Run {
  int64_t first, count;
};

Run valid_columns(const Conv2dShape& s, int kw) {
  const int64_t ow_out = s.out_w();
  // smallest ow with ow*stride >= pad_left - kw
  const int64_t lo_num = s.pad_left - kw;
  const int64_t first = lo_num <= 0 ? 0 : (lo_num + s.stride - 1) / s.stride;
  // largest ow with ow*stride <= W - 1 + pad_left - kw
  const int64_t hi_num = s.w - 1 + s.pad_left - kw;
  if (hi_num < 0) return {0, 0};
  const int64_t last = std::min(ow_out - 1, hi_num / s.stride);
  return {first, std::max<int64_t>(0, last - first + 1)};
}

// Input channels per wgrad task: small enough to give 2+ cores work on a 1x1 conv.
constexpr int64_t kWgradChannelBlock = 8;

}  // namespace

template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* b, T* y) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.n * oh_n; ++row) {
    const int64_t n = row / oh_n, oh = row % oh_n;
    T* y_row = y + row * ow_n * s.c_out;
    for (int64_t ow = 0; ow < ow_n; ++ow)
      for (int64_t co = 0; co < s.c_out; ++co) y_row[ow * s.c_out + co] = b ? b[co] : T(0);
    for (int kh = 0; kh < s.kh; ++kh) {
      const int64_t ih = oh * s.stride - s.pad_top + kh;
      if (ih < 0 || ih >= s.h) continue;
      for (int kw = 0; kw < s.kw; ++kw) {
        const Run run = valid_columns(s, kw);
        if (run.count == 0) continue;
        const int64_t iw0 = run.first * s.stride - s.pad_left + kw;
        const T* x_run = x + ((n * s.h + ih) * s.w + iw0) * s.c_in;
        const T* w_tap = w + (static_cast<int64_t>(kh) * s.kw + kw) * s.c_in * s.c_out;
        gemm_acc<T>(false, false, run.count, s.c_out, s.c_in, T(1), x_run, s.stride * s.c_in,
                    w_tap, s.c_out, y_row + run.first * s.c_out, s.c_out);
      }
    }
  }
}

template <class T>
void conv2d_backward(const Conv2dShape& s, const T* x, const T* w, const T* dy, T* dx, T* dw,
                     T* db) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w();
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t in_row = 0; in_row < s.n * s.h; ++in_row) {
      const int64_t n = in_row / s.h, ih = in_row % s.h;
      for (int kh = 0; kh < s.kh; ++kh) {
        const int64_t num = ih + s.pad_top - kh;  // = oh * stride
        if (num < 0 || num % s.stride != 0 || num / s.stride >= oh_n) continue;
        const int64_t oh = num / s.stride;
        for (int kw = 0; kw < s.kw; ++kw) {
          const Run run = valid_columns(s, kw);
          if (run.count == 0) continue;
          const int64_t iw0 = run.first * s.stride - s.pad_left + kw;
          const T* dy_run = dy + ((n * oh_n + oh) * ow_n + run.first) * s.c_out;
          const T* w_tap = w + (static_cast<int64_t>(kh) * s.kw + kw) * s.c_in * s.c_out;
          // dx_run (run x Cin) += dy_run (run x Cout) * w_tap^T (Cout x Cin)
          gemm_acc<T>(false, true, run.count, s.c_in, s.c_out, T(1), dy_run, s.c_out, w_tap,
                      s.c_out, dx + ((n * s.h + ih) * s.w + iw0) * s.c_in, s.stride * s.c_in);
        }
      }
    }
  }
  if (dw) {
    const int64_t blocks = (s.c_in + kWgradChannelBlock - 1) / kWgradChannelBlock;
    const int64_t taps = static_cast<int64_t>(s.kh) * s.kw;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < taps * blocks; ++task) {
      const int kh = static_cast<int>(task / blocks / s.kw), kw = static_cast<int>(task / blocks % s.kw);
      const int64_t ci0 = (task % blocks) * kWgradChannelBlock;
      const int64_t cis = std::min(kWgradChannelBlock, s.c_in - ci0);
      const Run run = valid_columns(s, kw);
      if (run.count == 0) continue;
      const int64_t iw0 = run.first * s.stride - s.pad_left + kw;
      T* dw_block = dw + ((static_cast<int64_t>(kh) * s.kw + kw) * s.c_in + ci0) * s.c_out;
      for (int64_t n = 0; n < s.n; ++n) {
        for (int64_t oh = 0; oh < oh_n; ++oh) {
          const int64_t ih = oh * s.stride - s.pad_top + kh;
          if (ih < 0 || ih >= s.h) continue;
          // dw_block (cis x Cout) += x_run^T (cis x run) * dy_run (run x Cout)
          gemm_acc<T>(true, false, cis, s.c_out, run.count, T(1),
                      x + ((n * s.h + ih) * s.w + iw0) * s.c_in + ci0, s.stride * s.c_in,
                      dy + ((n * oh_n + oh) * ow_n + run.first) * s.c_out, s.c_out, dw_block,
                      s.c_out);
        }
      }
    }
  }
  if (db) {
    const int64_t pixels = s.n * oh_n * ow_n;
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t co = 0; co < s.c_out; ++co) db[co] += dy[p * s.c_out + co];
  }
}

template void conv2d_forward<float>(const Conv2dShape&, const float*, const float*, const float*,
                                    float*);
template void conv2d_forward<double>(const Conv2dShape&, const double*, const double*,
                                     const double*, double*);
template void conv2d_backward<float>(const Conv2dShape&, const float*, const float*,
                                     const float*, float*, float*, float*);
template void conv2d_backward<double>(const Conv2dShape&, const double*, const double*,
                                      const double*, double*, double*, double*);

}  // namespace ddpm::cpu
