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
// this data, a smooth background with exactly one sharp, uniformly coloured shape:
//   roughness  mean |difference| between neighbouring pixels, excluding the largest 10%
//              (shape edges): near 0 for the data, large for noise
//   contrast   the largest colour distance between a pixel and its row's median colour:
//              the shape standing out from the background (the shape is at most 15 px
//              wide, so the median is background)
//   shape      the pixels more than 40 from their row's median: their area within the
//              data's range (30-260 px), one 4-connected piece holding >= 90% of them,
//              and a uniform colour (mean per-channel standard deviation <= 12)
//   halo       pixels more than 12 from their row's median but less than half the
//              contrast, per shape pixel: the soft edge. 0 in the data, whose edges are
//              sharp and whose shape pixels are all >= 0.59 of the contrast (the shape
//              spans <= 15 of the gradient's 31 rows); one 3x3 box blur makes it ~0.3
// valid = all of: roughness <= 6, contrast >= 60, the shape conditions, halo <= 0.2
// (thresholds from the data: tests/test_images.cpp measures that every data image passes
// and that noise, blank images, blurred shapes and two shapes do not).
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
  int64_t shape_area = 0;         // pixels more than 40 from their row's median
  double largest_piece = 0;       // fraction of the shape in its largest 4-connected piece
  double shape_colour_std = 0;    // mean per-channel standard deviation over the shape
  double halo = 0;                // soft-edge pixels per shape pixel (see above)
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
