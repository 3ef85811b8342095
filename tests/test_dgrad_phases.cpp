// The strided dgrad by phase (kernels/dgrad_phases.h), on the CPU reference: each phase's
// stride-1 dgrad, with its taps taken from the phase-ordered weights, scattered back into
// dx, gives the direct dgrad's bits. The phases' sums are the direct one's terms in its
// order, less the zeros, so equality is exact, and a phase that takes a wrong tap, a wrong
// padding or a wrong pixel is off by a whole term. Then what the GPU kernels rely on: the
// phase-ordered taps are a permutation of the kernel's, and the phases' rows are every dx
// pixel once.
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <vector>

#include "engine/ops.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/dgrad_phases.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

struct Case {
  Shape x;
  int kh, kw;
  int64_t c_out;
  Conv2dParams p;
};

// The model's downsampler (TensorFlow 'SAME': 0 before, 1 after), symmetric padding, odd
// maps, stride 3, a kernel wider than tall, padding past a stride, one-row maps, and kernels
// smaller than the stride: 1x1 at stride 2 reaches one phase in four, the others get no tap.
const Case kCases[] = {
    {{2, 8, 8, 5}, 3, 3, 6, Conv2dParams::downsample()},
    {{2, 9, 9, 3}, 3, 3, 4, Conv2dParams{2, 1, 1, 1, 1}},
    {{1, 7, 6, 4}, 3, 3, 3, Conv2dParams{2, 1, 0, 1, 2}},
    {{2, 8, 7, 5}, 3, 3, 6, Conv2dParams{3, 1, 0, 1, 2}},
    {{1, 9, 11, 2}, 3, 5, 3, Conv2dParams{2, 0, 2, 1, 2}},
    {{1, 10, 10, 3}, 5, 5, 2, Conv2dParams{3, 3, 2, 0, 1}},
    {{2, 1, 7, 3}, 1, 3, 2, Conv2dParams{2, 0, 1, 0, 1}},
    {{2, 7, 6, 9}, 1, 1, 5, Conv2dParams{2, 0, 0, 0, 0}},
    {{1, 8, 8, 3}, 2, 2, 4, Conv2dParams{3, 0, 0, 0, 0}},
};

std::string describe(const Case& c) {
  std::ostringstream o;
  o << c.x.str() << " * " << c.kh << "x" << c.kw << " -> " << c.c_out << ", stride " << c.p.stride
    << ", pad " << c.p.pad_top << " " << c.p.pad_left << " " << c.p.pad_bottom << " "
    << c.p.pad_right;
  return o.str();
}

std::vector<float> randoms(int64_t n, uint64_t stream) {
  return test::random_tensor(Shape{n}, stream, DType::F32).to_vector<float>();
}

TEST(DgradPhases, EachPhasesStride1DgradIsTheDirectDgradsBits) {
  uint64_t stream = 40;
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.kh, c.kw, c.x[3], c.c_out}, c.p);
    const int64_t taps = int64_t{s.kh} * s.kw, tap_size = s.c_in * s.c_out;
    const std::vector<float> w = randoms(taps * tap_size, stream++),
                             dy = randoms(s.n * s.out_h() * s.out_w() * s.c_out, stream++),
                             dx0 = randoms(s.n * s.h * s.w * s.c_in, stream++);
    std::vector<float> want = dx0;  // the gradient accumulates, as the tape's does
    cpu::conv2d_backward<float>(s, nullptr, w.data(), dy.data(), want.data(), nullptr, nullptr);

    std::vector<float> ordered(w.size());
    for (int64_t d = 0; d < taps; ++d) {
      const int64_t tap = phase_ordered_tap(s, d);
      ASSERT_GE(tap, 0) << "place " << d;
      std::copy_n(w.begin() + tap * tap_size, tap_size, ordered.begin() + d * tap_size);
    }
    std::vector<float> got = dx0;
    for (int p = 0; p < s.stride * s.stride; ++p) {
      const DgradPhase ph = dgrad_phase(s, p);
      ASSERT_EQ(ph.shape.out_h(), s.out_h()) << "phase " << p << ": dy is its output";
      ASSERT_EQ(ph.shape.out_w(), s.out_w()) << "phase " << p;
      const PhaseRows rows = PhaseRows::of(s, ph);
      const int64_t m = ph.shape.n * ph.shape.h * ph.shape.w;
      std::vector<float> dx_p(m * s.c_in);
      for (int64_t r = 0; r < m; ++r)
        std::copy_n(got.begin() + rows(r) * s.c_in, s.c_in, dx_p.begin() + r * s.c_in);
      cpu::conv2d_backward<float>(ph.shape, nullptr, ordered.data() + ph.first_tap * tap_size,
                                  dy.data(), dx_p.data(), nullptr, nullptr);
      for (int64_t r = 0; r < m; ++r)
        std::copy_n(dx_p.begin() + r * s.c_in, s.c_in, got.begin() + rows(r) * s.c_in);
    }
    EXPECT_EQ(got, want);
  }
}

TEST(DgradPhases, PartitionTheTapsAndThePixels) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const Conv2dShape s = conv2d_shape(c.x, Shape{c.kh, c.kw, c.x[3], c.c_out}, c.p);
    const int64_t taps = int64_t{s.kh} * s.kw;
    std::set<int64_t> seen_taps;
    for (int64_t d = 0; d < taps; ++d) seen_taps.insert(phase_ordered_tap(s, d));
    EXPECT_EQ(static_cast<int64_t>(seen_taps.size()), taps);
    EXPECT_EQ(*seen_taps.begin(), 0);
    EXPECT_EQ(*seen_taps.rbegin(), taps - 1);
    EXPECT_EQ(phase_ordered_tap(s, taps), -1);

    std::vector<int> hits(s.n * s.h * s.w, 0);
    int64_t phase_taps = 0;
    for (int p = 0; p < s.stride * s.stride; ++p) {
      const DgradPhase ph = dgrad_phase(s, p);
      EXPECT_EQ(ph.first_tap, phase_taps) << "phase " << p;
      phase_taps += int64_t{ph.shape.kh} * ph.shape.kw;
      const PhaseRows rows = PhaseRows::of(s, ph);
      for (int64_t r = 0; r < ph.shape.n * ph.shape.h * ph.shape.w; ++r) {
        const int64_t pixel = rows(r);
        ASSERT_TRUE(pixel >= 0 && pixel < static_cast<int64_t>(hits.size())) << "row " << r;
        ++hits[pixel];
      }
    }
    EXPECT_EQ(phase_taps, taps);
    EXPECT_EQ(hits, std::vector<int>(hits.size(), 1));
  }
}

// The phases of the model's downsampler, worked out by hand (kernels/dgrad_phases.h): 3x3,
// stride 2, padded 0 above and 1 below, on a 32x32 map. Even rows (q = 0) take taps 0 and 2,
// odd rows tap 1; neither is padded above, so phase (0, 0) is a 2x2 kernel of taps
// (0,0) (0,2) (2,0) (2,2) over a 16x16 map.
TEST(DgradPhases, TheModelsDownsamplerByHand) {
  const Conv2dShape s =
      conv2d_shape(Shape{128, 32, 32, 128}, Shape{3, 3, 128, 128}, Conv2dParams::downsample());
  const int want_kh[4] = {2, 2, 1, 1}, want_kw[4] = {2, 1, 2, 1};
  const int64_t want_first[4] = {0, 4, 6, 8};
  for (int p = 0; p < 4; ++p) {
    const DgradPhase ph = dgrad_phase(s, p);
    EXPECT_EQ(ph.shape.kh, want_kh[p]) << p;
    EXPECT_EQ(ph.shape.kw, want_kw[p]) << p;
    EXPECT_EQ(ph.first_tap, want_first[p]) << p;
    EXPECT_EQ(ph.shape.h, 16);
    EXPECT_EQ(ph.shape.w, 16);
    EXPECT_EQ(ph.shape.pad_top, 0);
    EXPECT_EQ(ph.shape.pad_left, 0);
  }
  const int64_t want_order[9] = {0, 2, 6, 8, 1, 7, 3, 5, 4};
  for (int64_t d = 0; d < 9; ++d) EXPECT_EQ(phase_ordered_tap(s, d), want_order[d]) << d;
}

}  // namespace
}  // namespace ddpm
