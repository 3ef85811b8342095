#include "models/toy/scatter_plot.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/png.h"

namespace ddpm {

void write_scatter_png(const std::string& path, const Tensor& data, const Tensor& samples,
                       int size) {
  const std::vector<float> d = data.to(Device::CPU).to_vector<float>();
  const std::vector<float> s = samples.to(Device::CPU).to_vector<float>();
  float extent = 1e-3f;
  for (float v : d) extent = std::max(extent, std::fabs(v));
  extent *= 1.1f;
  std::vector<uint8_t> rgb(static_cast<size_t>(size) * size * 3, 255);
  auto dot = [&](float x, float y, uint8_t r, uint8_t g, uint8_t b) {
    const int px = static_cast<int>((x / extent + 1) * 0.5f * (size - 1));
    const int py = static_cast<int>((1 - (y / extent + 1) * 0.5f) * (size - 1));
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        const int cx = px + dx, cy = py + dy;
        if (cx < 0 || cy < 0 || cx >= size || cy >= size) continue;
        uint8_t* p = &rgb[(static_cast<size_t>(cy) * size + cx) * 3];
        p[0] = r;
        p[1] = g;
        p[2] = b;
      }
  };
  for (size_t i = 0; i + 1 < d.size(); i += 2) dot(d[i], d[i + 1], 190, 190, 190);
  for (size_t i = 0; i + 1 < s.size(); i += 2) dot(s[i], s[i + 1], 220, 30, 30);
  // axes through the origin
  for (int i = 0; i < size; ++i) {
    uint8_t* h = &rgb[(static_cast<size_t>(size / 2) * size + i) * 3];
    uint8_t* v = &rgb[(static_cast<size_t>(i) * size + size / 2) * 3];
    if (h[0] == 255 && h[1] == 255) h[0] = h[1] = h[2] = 225;
    if (v[0] == 255 && v[1] == 255) v[0] = v[1] = v[2] = 225;
  }
  write_png(path, size, size, rgb);
}

}  // namespace ddpm
