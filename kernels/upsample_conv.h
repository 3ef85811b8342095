// Nearest 2x upsampling followed by a 3x3 'same' convolution, computed by output phase
// (the decomposition engine/ops.h's upsample_conv3x3 runs, on every device).
//
// In one dimension: u[p] = x[p / 2] is the upsampled row and y[o] = u[o-1] w0 + u[o] w1 +
// u[o+1] w2 the convolution (zero outside the map). y[2i] reads u[2i-1], u[2i], u[2i+1] =
// x[i-1], x[i], x[i], and y[2i+1] reads u[2i], u[2i+1], u[2i+2] = x[i], x[i], x[i+1]:
//
//   y[2i]     = x[i-1] w0        + x[i] (w1 + w2)      phase 0: x at i-1, i
//   y[2i + 1] = x[i]   (w0 + w1) + x[i+1] w2           phase 1: x at i, i+1
//
// So each phase is a 2-tap convolution of x itself, at x's resolution, with a folded
// kernel; in two dimensions each of the four phases (a, b) = (row, column parity of the
// output) is a 2x2 convolution of x with 4 folded taps instead of 9 over a map 4x larger:
// 4/9 of the multiply-adds, and no upsampled tensor is ever written. Phase a's window
// starts at x row i + a - 1: a 2x2 convolution padded 1 - a above and a below, so its
// output has x's size, and output (i, j) of phase (a, b) is pixel (2i + a, 2j + b).
//
// The backward follows from the same sums: dx is the sum of the four phases' dgrads, and
// the folded kernels' gradients unfold onto the 3x3 taps they were summed from (each 3x3
// tap is in one folded tap of each phase: 4 terms). Shared by the CPU and CUDA kernels so
// that both fold in the same order, to the same bits (a sum of at most four fp32 values,
// in a fixed order).
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace ddpm {

// Folded tap t (0, 1) of phase a (0, 1) along one axis sums the 3x3 taps first..last:
// phase 0: {0}, {1, 2}; phase 1: {0, 1}, {2}.
DDPM_HD int folded_first(int a, int t) { return t == 0 ? 0 : a + 1; }
DDPM_HD int folded_last(int a, int t) { return t == 0 ? a : 2; }
// The folded tap of phase a that 3x3 tap k is part of.
DDPM_HD int folded_tap(int a, int k) { return k > a ? 1 : 0; }

// w4[p][th][tw][e], p = 2a + b, from w (3, 3, Cin, Cout); e = ci * Cout + co runs over the
// taps' cin_cout elements. kh outer, kw inner, ascending.
template <class T>
DDPM_HD T folded_weight(const T* w, int64_t cin_cout, int a, int b, int th, int tw, int64_t e) {
  T sum = 0;
  for (int kh = folded_first(a, th); kh <= folded_last(a, th); ++kh)
    for (int kw = folded_first(b, tw); kw <= folded_last(b, tw); ++kw)
      sum += w[(kh * 3 + kw) * cin_cout + e];
  return sum;
}

// d w[kh][kw][e] from the folded kernels' gradients dw4[p] (2, 2, Cin, Cout): the sum over
// the four phases, p ascending, of the folded tap holding (kh, kw).
template <class T>
DDPM_HD T unfolded_gradient(const T* const (&dw4)[4], int64_t cin_cout, int kh, int kw,
                            int64_t e) {
  T sum = 0;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      sum += dw4[2 * a + b][(folded_tap(a, kh) * 2 + folded_tap(b, kw)) * cin_cout + e];
  return sum;
}

}  // namespace ddpm
