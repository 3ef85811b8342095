#include "models/data/synthetic_images.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/philox.h"

namespace ddpm {

namespace {
constexpr uint64_t kImageStream = 0x1A000000000000ull;
constexpr double kMaxRoughness = 6.0;   // data: < 2.5 measured; uniform noise: ~85
constexpr double kMinContrast = 60.0;   // data: >= 80 by construction (saturated vs bg)
constexpr double kShapeDistance = 40.0;  // data: shape pixels >= 80 from the background
constexpr double kHaloDistance = 12.0;   // data: background pixels 0 from their row median
constexpr int64_t kMinArea = 30, kMaxArea = 260;  // data: discs 50-154 px, squares 64-225
constexpr double kMinLargestPiece = 0.9, kMaxColourStd = 12.0, kMaxHalo = 0.2;

// Size of the largest 4-connected piece of `mask` (32x32).
int64_t largest_piece(const std::vector<char>& mask) {
  std::vector<char> seen(mask.size(), 0);
  std::vector<int> stack;
  int64_t best = 0;
  for (int start = 0; start < 1024; ++start) {
    if (!mask[start] || seen[start]) continue;
    int64_t size = 0;
    stack.assign(1, start);
    seen[start] = 1;
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      ++size;
      const int x = i % 32, y = i / 32;
      const int next[4] = {x > 0 ? i - 1 : -1, x < 31 ? i + 1 : -1, y > 0 ? i - 32 : -1,
                           y < 31 ? i + 32 : -1};
      for (int j : next)
        if (j >= 0 && mask[j] && !seen[j]) {
          seen[j] = 1;
          stack.push_back(j);
        }
    }
    best = std::max(best, size);
  }
  return best;
}
}  // namespace

void SyntheticImages::get(int64_t i, uint8_t* out) const {
  CHECK(i >= 0 && i < size_, "synthetic image " << i << " outside [0, " << size_ << ")");
  auto u = [&](int k) { return philox_uniform(seed_, kImageStream + static_cast<uint64_t>(i), k); };
  double top[3], bottom[3], shape[3];
  for (int c = 0; c < 3; ++c) {
    top[c] = 40 + 120 * u(c);  // muted backgrounds in [40, 160]
    bottom[c] = 40 + 120 * u(3 + c);
  }
  // A saturated shape colour: one channel high, one low, one anywhere; always >= 80 from
  // any background colour in at least one channel.
  const int hi = std::min(2, static_cast<int>(u(6) * 3)), lo = (hi + 1 + (u(7) < 0.5 ? 0 : 1)) % 3;
  for (int c = 0; c < 3; ++c) shape[c] = 255 * u(8 + c);
  shape[hi] = 245;
  shape[lo] = 10;
  const bool disc = u(11) < 0.5;
  const double half = 4 + 3 * u(12);  // the disc's radius, or half the square's side
  const double cx = half + (32 - 2 * half) * u(13), cy = half + (32 - 2 * half) * u(14);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      const bool inside = disc ? dx * dx + dy * dy <= half * half
                               : std::fabs(dx) <= half && std::fabs(dy) <= half;
      for (int c = 0; c < 3; ++c) {
        const double bg = top[c] + (bottom[c] - top[c]) * y / 31.0;
        out[(y * 32 + x) * 3 + c] = static_cast<uint8_t>(std::lround(inside ? shape[c] : bg));
      }
    }
}

ImageValidity check_synthetic_image(const uint8_t* p) {
  ImageValidity v;
  std::vector<double> diffs;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c) {
        const int here = p[(y * 32 + x) * 3 + c];
        if (x + 1 < 32) diffs.push_back(std::abs(here - p[(y * 32 + x + 1) * 3 + c]));
        if (y + 1 < 32) diffs.push_back(std::abs(here - p[((y + 1) * 32 + x) * 3 + c]));
      }
  std::sort(diffs.begin(), diffs.end());
  const size_t keep = diffs.size() * 9 / 10;
  for (size_t i = 0; i < keep; ++i) v.roughness += diffs[i] / keep;
  std::vector<char> shape(1024, 0);
  std::vector<double> dist(1024, 0.0);
  int64_t halo = 0;
  double sum[3] = {0, 0, 0}, sum_sq[3] = {0, 0, 0};
  for (int y = 0; y < 32; ++y) {
    double median[3];
    for (int c = 0; c < 3; ++c) {
      std::vector<int> row(32);
      for (int x = 0; x < 32; ++x) row[x] = p[(y * 32 + x) * 3 + c];
      std::nth_element(row.begin(), row.begin() + 16, row.end());
      median[c] = row[16];
    }
    for (int x = 0; x < 32; ++x) {
      double d = 0;
      for (int c = 0; c < 3; ++c) d = std::max(d, std::fabs(p[(y * 32 + x) * 3 + c] - median[c]));
      v.contrast = std::max(v.contrast, d);
      dist[y * 32 + x] = d;
      if (d > kShapeDistance) {
        shape[y * 32 + x] = 1;
        ++v.shape_area;
        for (int c = 0; c < 3; ++c) {
          sum[c] += p[(y * 32 + x) * 3 + c];
          sum_sq[c] += double(p[(y * 32 + x) * 3 + c]) * p[(y * 32 + x) * 3 + c];
        }
      }
    }
  }
  // the soft edge: pixels between the background and half the shape's contrast (the data's
  // shape pixels are all >= 0.59 of its largest distance: see the header)
  for (double d : dist) halo += d > kHaloDistance && d < 0.5 * v.contrast;
  if (v.shape_area > 0) {
    const double a = static_cast<double>(v.shape_area);
    v.largest_piece = static_cast<double>(largest_piece(shape)) / a;
    for (int c = 0; c < 3; ++c)
      v.shape_colour_std += std::sqrt(std::max(0.0, sum_sq[c] / a - (sum[c] / a) * (sum[c] / a))) / 3;
    v.halo = static_cast<double>(halo) / a;
  }
  v.valid = v.roughness <= kMaxRoughness && v.contrast >= kMinContrast &&
            v.shape_area >= kMinArea && v.shape_area <= kMaxArea &&
            v.largest_piece >= kMinLargestPiece && v.shape_colour_std <= kMaxColourStd &&
            v.halo <= kMaxHalo;
  return v;
}

SampleQuality synthetic_quality(const Tensor& images) {
  CHECK(images.shape().ndim() == 4 && images.shape()[1] == 32 && images.shape()[2] == 32 &&
            images.shape()[3] == 3,
        "synthetic quality: need (N, 32, 32, 3) images, got " << images.describe());
  const std::vector<uint8_t> px = to_bytes(images);
  const int64_t n = images.shape()[0];
  SampleQuality q;
  int64_t valid = 0;
  for (int64_t i = 0; i < n; ++i) {
    const ImageValidity v = check_synthetic_image(&px[i * 3072]);
    valid += v.valid;
    q.mean_roughness += v.roughness / static_cast<double>(n);
  }
  q.valid_fraction = static_cast<double>(valid) / static_cast<double>(n);
  return q;
}

}  // namespace ddpm
