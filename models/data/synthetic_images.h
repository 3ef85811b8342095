// The built-in image dataset, so `ddpm train` runs with no download: 32x32 RGB images of one
// coloured shape (a disc or a square) on a smooth vertical gradient. Image i is a pure
// function of (seed, i): the set needs no storage.
//
//   background  row y has colour lerp(top, bottom, y/31); top and bottom random RGB
//   shape       a disc (radius 4-7) or square (side 8-14), one random saturated colour at a
//               random position; its width never exceeds 15 px, so every row is mostly
//               background
//
// The validity check (the trainer's quality figure): an image is valid when it looks like
// this data, measured by two numbers:
//   roughness  mean |difference| between neighbouring pixels, excluding the largest 10%
//              (shape edges): near 0 for the data, large for noise
//   contrast   the largest colour distance between a pixel and its row's median colour:
//              the shape standing out from the background
// valid = roughness <= kMaxRoughness and contrast >= kMinContrast (thresholds from the data:
// tests/test_images.cpp measures that every data image passes and noise never does).
#pragma once

#include "models/data/image_dataset.h"

namespace ddpm {

class SyntheticImages : public ImageDataset {
 public:
  SyntheticImages(int64_t size, uint64_t seed) : size_(size), seed_(seed) {}
  int64_t size() const override { return size_; }
  int64_t height() const override { return 32; }
  int64_t width() const override { return 32; }
  void get(int64_t i, uint8_t* out) const override;

 private:
  int64_t size_;
  uint64_t seed_;
};

struct ImageValidity {
  double roughness = 0, contrast = 0;
  bool valid = false;
};
ImageValidity check_synthetic_image(const uint8_t* rgb /* (32, 32, 3) */);
// The quality figures of images (N, 32, 32, 3) in [-1, 1]: the fraction that pass the
// check, and their mean roughness (a graded figure: ~2 for the data, ~85 for uniform noise,
// so it shows progress long before samples become fully valid).
struct SampleQuality {
  double valid_fraction = 0, mean_roughness = 0;
};
SampleQuality synthetic_quality(const Tensor& images);

}  // namespace ddpm
