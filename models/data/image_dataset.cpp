#include "models/data/image_dataset.h"

#include <algorithm>
#include <cmath>

#include "engine/philox.h"
#include "engine/png.h"

namespace ddpm {

namespace {
constexpr uint64_t kShuffleStream = 0xB000000000000000ull, kFlipStream = 0xB100;
}  // namespace

ImageBatcher::ImageBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch, uint64_t seed,
                           bool random_flip)
    : data_(std::move(data)), batch_(batch), seed_(seed), flip_(random_flip) {
  CHECK(data_ && data_->size() > 0, "image batcher: empty dataset");
  CHECK(batch >= 1, "image batcher: batch must be >= 1, got " << batch);
}

const std::vector<int64_t>& ImageBatcher::permutation(int64_t epoch) {
  if (epoch == cached_epoch_) return perm_;
  const int64_t n = data_->size();
  perm_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm_[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = std::min<int64_t>(
        i, static_cast<int64_t>(philox_uniform(seed_, kShuffleStream + epoch, i) * (i + 1)));
    std::swap(perm_[i], perm_[j]);
  }
  cached_epoch_ = epoch;
  return perm_;
}

ImageBatcher::Bytes ImageBatcher::batch_bytes(int64_t step, int64_t first, int64_t count) {
  if (count < 0) count = batch_ - first;
  CHECK(first >= 0 && count >= 1 && first + count <= batch_,
        "samples [" << first << ", " << first + count << ") of a batch of " << batch_);
  const int64_t h = data_->height(), w = data_->width(), c = data_->channels(), n = data_->size();
  std::vector<uint8_t> images(static_cast<size_t>(count * h * w * c));
  for (int64_t j = 0; j < count; ++j) {
    const int64_t g = step * batch_ + first + j;
    data_->get(permutation(g / n)[g % n], images.data() + j * h * w * c);
  }
  Bytes b;
  b.images = Tensor::from_vector(Shape{count, h, w, c}, images);
  b.flip = flip_;
  b.flip_seed = seed_;
  b.flip_stream = kFlipStream;
  b.flip_first = static_cast<uint64_t>(step * batch_ + first);
  return b;
}

Tensor ImageBatcher::batch(int64_t step, int64_t first, int64_t count) {
  const Bytes b = batch_bytes(step, first, count);
  count = b.images.shape()[0];
  const int64_t h = data_->height(), w = data_->width(), c = data_->channels();
  const uint8_t* img = b.images.data<uint8_t>();
  std::vector<float> out(static_cast<size_t>(count * h * w * c));
  for (int64_t j = 0; j < count; ++j) {
    const bool mirror = flip_ && philox_uniform(seed_, kFlipStream, b.flip_first + j) < 0.5f;
    const uint8_t* src = img + j * h * w * c;
    float* dst = out.data() + j * h * w * c;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k)
          dst[(y * w + x) * c + k] = src[(y * w + (mirror ? w - 1 - x : x)) * c + k] / 127.5f - 1.0f;
  }
  return Tensor::from_vector(Shape{count, h, w, c}, out);
}

Tensor dataset_images(const ImageDataset& data, int64_t first, int64_t count) {
  CHECK(first >= 0 && count >= 1 && first + count <= data.size(),
        "images [" << first << ", " << first + count << ") of a dataset of " << data.size());
  const int64_t px = data.height() * data.width() * data.channels();
  std::vector<uint8_t> bytes(static_cast<size_t>(px));
  std::vector<float> out(static_cast<size_t>(count * px));
  for (int64_t i = 0; i < count; ++i) {
    data.get(first + i, bytes.data());
    for (int64_t k = 0; k < px; ++k) out[i * px + k] = bytes[k] / 127.5f - 1.0f;
  }
  return Tensor::from_vector(Shape{count, data.height(), data.width(), data.channels()}, out);
}

std::vector<uint8_t> to_bytes(const Tensor& images) {
  const std::vector<float> v = images.to(Device::CPU).to(DType::F32).to_vector<float>();
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = static_cast<uint8_t>(std::lround(std::clamp((v[i] + 1.0f) * 127.5f, 0.0f, 255.0f)));
  return out;
}

void write_image_grid(const std::string& path, const Tensor& images, int64_t cols) {
  CHECK(images.shape().ndim() == 4 && (images.shape()[3] == 3 || images.shape()[3] == 1),
        "image grid: need (N, H, W, 3) or (N, H, W, 1) images, got " << images.describe());
  const int64_t n = images.shape()[0], h = images.shape()[1], w = images.shape()[2];
  const int64_t c = images.shape()[3];
  cols = std::max<int64_t>(1, std::min(cols, n));
  const int64_t rows = (n + cols - 1) / cols, border = 2;
  const int64_t gw = cols * (w + border) + border, gh = rows * (h + border) + border;
  const std::vector<uint8_t> px = to_bytes(images);
  std::vector<uint8_t> grid(static_cast<size_t>(gw * gh * 3), 255);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ox = border + (i % cols) * (w + border), oy = border + (i / cols) * (h + border);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int k = 0; k < 3; ++k)  // grey: the one channel in all three
          grid[((oy + y) * gw + ox + x) * 3 + k] = px[((i * h + y) * w + x) * c + (c == 3 ? k : 0)];
  }
  write_png(path, static_cast<int>(gw), static_cast<int>(gh), grid);
}

}  // namespace ddpm
