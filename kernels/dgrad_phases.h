// The input gradient (dgrad) of a strided convolution as stride^2 stride-1 dgrads, one per
// phase of dx: the decomposition conv v4/v5 run (kernels/cuda/conv2d_bf16.cu), and the one
// the CPU test checks against the direct dgrad (tests/test_dgrad_phases.cpp).
//
// Why. The direct dgrad is a GEMM over every dx pixel with K = taps x Cout, and at stride s
// only the taps congruent to the pixel's position reach it: at stride 2 a 3x3 kernel gives
// a pixel 1, 2, 2 or 4 of its 9 taps, 2.25 on average. A tile of mixed pixels multiplies
// through all 9 (the others masked to zeros): 3/4 of its tensor-core work lands nowhere.
// Grouping the pixels by phase makes every tap of a tile live.
//
// The algebra, in one dimension (stride s, padding P above, taps 0..K-1, output rows OH):
//
//   dx[ih] = sum over kh of dy[oh] w[kh],  where oh s = ih + P - kh and 0 <= oh < OH.
//
// Write ih = i s + r, with r the phase (0 <= r < s). ih + P - kh is a multiple of s only
// for kh congruent to r + P, so the live taps are kh = q + s t, with q = (r + P) mod s and
// t = 0 .. K_r - 1 (K_r = ceil((K - q) / s), which is 0 when q >= K), and then oh = i + c - t
// with c = (r + P) div s:
//
//   dx_r[i] = sum over t of dy[i + c - t] w[q + s t]
//
// the dgrad of a stride-1 convolution padded c above, with the K_r-tap kernel w_r[t] =
// w[q + s t], of a map of H_r = ceil((H - r) / s) rows whose output is dy itself (OH rows;
// its bottom padding is whatever makes that so, negative when the phase's last rows are
// read by no output). In two dimensions phase (rh, rw) is the product of the two. The
// phases' live taps partition the kernel (q runs over 0..s-1 as r does), so the
// phase-ordered weights (phase_ordered_tap) are a permutation of the taps: the same size.
//
// Within a phase the terms are the direct dgrad's, in its order (taps ascending, then
// channels), less the ones that were zero; the CPU test holds the two to the same bits.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"
#include "kernels/shapes.h"

namespace ddpm {

// One axis of a phase: its first live tap q, tap count, top padding c and map size.
struct PhaseAxis {
  int q, taps, pad;
  int64_t size;
};

DDPM_HD PhaseAxis phase_axis(int r, int stride, int pad, int kernel, int64_t size) {
  const int q = (r + pad) % stride;
  return {q, q < kernel ? (kernel - q + stride - 1) / stride : 0, (r + pad) / stride,
          size > r ? (size - r + stride - 1) / stride : 0};
}

struct DgradPhase {
  int rh, rw;         // its dx pixels: (i s + rh, j s + rw)
  int qh, qw;         // its first tap; the others are (qh + s th, qw + s tw)
  Conv2dShape shape;  // the stride-1 convolution (N, H_r, W_r, Cin) -> dy whose dgrad it is;
                      // kh x kw its live taps (0 when none reach it)
  int64_t first_tap;  // where its taps start in the phase-ordered weights
};

// Phase p = rh * stride + rw of s's dgrad (p < stride^2), in that order.
DDPM_HD DgradPhase dgrad_phase(const Conv2dShape& s, int p) {
  DgradPhase ph{};
  for (int at = 0; at <= p; ++at) {
    const int rh = at / s.stride, rw = at % s.stride;
    const PhaseAxis ah = phase_axis(rh, s.stride, s.pad_top, s.kh, s.h);
    const PhaseAxis aw = phase_axis(rw, s.stride, s.pad_left, s.kw, s.w);
    if (at < p) {
      ph.first_tap += static_cast<int64_t>(ah.taps) * aw.taps;
      continue;
    }
    // the bottom and right padding that make out_h() = H_r + c + pad_bottom - K_r + 1 = OH
    const int pad_bottom = static_cast<int>(s.out_h() - 1 + ah.taps - ah.size - ah.pad);
    const int pad_right = static_cast<int>(s.out_w() - 1 + aw.taps - aw.size - aw.pad);
    ph.rh = rh;
    ph.rw = rw;
    ph.qh = ah.q;
    ph.qw = aw.q;
    // (N, H_r, W_r, Cin) -> (Cout), kernel K_r x K_w, stride 1, padding c above
    ph.shape = Conv2dShape{s.n,     ah.size, aw.size, s.c_in, s.c_out,    ah.taps,
                           aw.taps, 1,       ah.pad,  aw.pad, pad_bottom, pad_right};
  }
  return ph;
}

// The tap (kh * KW + kw) of s's kernel at place d of the phase-ordered weights.
DDPM_HD int64_t phase_ordered_tap(const Conv2dShape& s, int64_t d) {
  for (int p = 0; p < s.stride * s.stride; ++p) {  // d counted from phase p's first tap
    const PhaseAxis ah = phase_axis(p / s.stride, s.stride, s.pad_top, s.kh, s.h);
    const PhaseAxis aw = phase_axis(p % s.stride, s.stride, s.pad_left, s.kw, s.w);
    const int64_t taps = static_cast<int64_t>(ah.taps) * aw.taps;
    if (d < taps) return (ah.q + s.stride * (d / aw.taps)) * s.kw + aw.q + s.stride * (d % aw.taps);
    d -= taps;
  }
  return -1;  // d is past the kernel's taps
}

// Row r of phase ph's GEMM, pixel (n, i, j) of its (N, H_r, W_r) map, as a pixel of dx
// (N, H, W): (n, i s + rh, j s + rw). Identity for stride 1 (the direct dgrad's rows).
// 32-bit divisions: the caller holds N H W under 2^31.
struct PhaseRows {
  uint32_t h_r = 1, w_r = 1, h = 1, w = 1;
  int stride = 1, rh = 0, rw = 0;
  static PhaseRows of(const Conv2dShape& s, const DgradPhase& ph) {
    return {static_cast<uint32_t>(ph.shape.h),
            static_cast<uint32_t>(ph.shape.w),
            static_cast<uint32_t>(s.h),
            static_cast<uint32_t>(s.w),
            s.stride,
            ph.rh,
            ph.rw};
  }
  DDPM_HD int64_t operator()(int64_t r) const {
    if (stride == 1) return r;
    const uint32_t q = static_cast<uint32_t>(r) / w_r, j = static_cast<uint32_t>(r) - q * w_r;
    const uint32_t n = q / h_r, i = q - n * h_r;
    return (static_cast<int64_t>(n) * h + i * stride + rh) * w + j * stride + rw;
  }
};

}  // namespace ddpm
