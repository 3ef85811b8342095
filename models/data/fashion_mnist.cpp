#include "models/data/fashion_mnist.h"

#include <algorithm>
#include <cstring>

#include "engine/check.h"
#include "models/data/idx.h"

namespace ddpm {

FashionMnist FashionMnist::load(const std::string& dir, const std::string& split, int64_t size,
                                int64_t channels, const std::vector<int64_t>& classes) {
  CHECK(split == "train" || split == "test", "Fashion-MNIST split must be train or test, got '"
                                                 << split << "'");
  const std::string prefix = dir + "/" + (split == "train" ? "train" : "t10k");
  return load_files(prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz", size,
                    channels, classes);
}

FashionMnist FashionMnist::load_files(const std::string& images, const std::string& labels,
                                      int64_t size, int64_t channels,
                                      const std::vector<int64_t>& classes) {
  CHECK(size == 28 || size == 32, "Fashion-MNIST images are served at 28 or 32 pixels, not " << size);
  CHECK(channels == 1 || channels == 3, "Fashion-MNIST images have 1 or 3 channels, not " << channels);
  const IdxArray im = read_idx(images), lb = read_idx(labels);
  CHECK(im.dims.size() == 3 && im.dims[1] == 28 && im.dims[2] == 28,
        "'" << images << "': images must be (N, 28, 28), the file holds " << im.dims.size()
            << " dimensions starting " << im.dims[0]);
  CHECK(lb.dims.size() == 1 && lb.dims[0] == im.dims[0],
        "'" << labels << "': " << lb.dims[0] << " labels for the " << im.dims[0] << " images of '"
            << images << "'");
  FashionMnist f;
  f.size_ = size;
  f.channels_ = channels;
  for (int64_t i = 0; i < im.dims[0]; ++i) {
    const int label = lb.data[static_cast<size_t>(i)];
    CHECK(label <= 9, "'" << labels << "': label " << label << " of image " << i
                          << " (offset " << 8 + i << ") is outside 0-9");
    if (!classes.empty() && std::find(classes.begin(), classes.end(), label) == classes.end())
      continue;
    f.labels_.push_back(label);
    f.pixels_.insert(f.pixels_.end(), im.data.begin() + i * 784, im.data.begin() + (i + 1) * 784);
  }
  CHECK(!f.labels_.empty(), "'" << images << "': no image of the requested classes");
  return f;
}

void FashionMnist::get(int64_t i, uint8_t* out) const {
  CHECK(i >= 0 && i < size(), "Fashion-MNIST image " << i << " outside [0, " << size() << ")");
  const uint8_t* src = &pixels_[static_cast<size_t>(i) * 784];
  const int64_t pad = (size_ - 28) / 2;
  std::memset(out, 0, static_cast<size_t>(size_ * size_ * channels_));  // black, as the data's border
  for (int64_t y = 0; y < 28; ++y)
    for (int64_t x = 0; x < 28; ++x)
      for (int64_t c = 0; c < channels_; ++c)
        out[((y + pad) * size_ + x + pad) * channels_ + c] = src[y * 28 + x];
}

}  // namespace ddpm
