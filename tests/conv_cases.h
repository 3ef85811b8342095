// The convolutions every convolution test runs: awkward shapes (odd sizes, channels that
// fill no vector, stride 2, asymmetric padding, 1x1, a kernel column only over padding) and every convolution of the CIFAR-10
// U-Net at batch 2 (the batch only scales M). With DDPM_TEST_SMALL_SHAPES=1 (sanitizer
// runs), the awkward ones only.
#pragma once

#include <vector>

#include "engine/ops.h"
#include "tests/test_util.h"

namespace ddpm::test {

struct ConvCase {
  Shape x;
  int k;
  int64_t c_out;
  Conv2dParams p;
};

inline std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> cases = {
      {{3, 5, 7, 3}, 3, 4, Conv2dParams::same(3)},
      {{2, 6, 8, 3}, 3, 5, Conv2dParams::downsample()},
      {{2, 9, 9, 65}, 3, 3, Conv2dParams{2, 1, 1, 1, 1}},
      {{1, 5, 6, 9}, 3, 2, Conv2dParams{1, 0, 2, 1, 0}},
      {{3, 5, 7, 65}, 1, 67, Conv2dParams{}},
      // stride 2 over a 2-wide map padded by 1 on the right: the kernel's last column meets
      // only padding (no output column reads the input through it)
      {{1, 3, 2, 2}, 3, 3, Conv2dParams::downsample()},
      // the CIFAR-10 U-Net's convolutions
      {{2, 32, 32, 3}, 3, 128, Conv2dParams::same(3)},
      {{2, 32, 32, 128}, 3, 128, Conv2dParams::same(3)},
      {{2, 32, 32, 128}, 3, 128, Conv2dParams::downsample()},
      {{2, 16, 16, 128}, 3, 256, Conv2dParams::same(3)},
      {{2, 16, 16, 256}, 3, 256, Conv2dParams::same(3)},
      {{2, 8, 8, 256}, 3, 256, Conv2dParams::same(3)},
      {{2, 4, 4, 512}, 3, 256, Conv2dParams::same(3)},
      {{2, 16, 16, 384}, 3, 256, Conv2dParams::same(3)},
      {{2, 32, 32, 384}, 3, 128, Conv2dParams::same(3)},
      {{2, 32, 32, 256}, 3, 128, Conv2dParams::same(3)},
      {{2, 32, 32, 128}, 3, 3, Conv2dParams::same(3)},
  };
  if (small_shapes_only()) cases.resize(6);  // the awkward shapes above the model's
  return cases;
}

}  // namespace ddpm::test
