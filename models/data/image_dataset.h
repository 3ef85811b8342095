// Image datasets as the trainer sees them: N images of (H, W, C) uint8 (C = 3, or 1 for
// grey data), read by index, and a
// batcher that turns a step number into a batch, so a resumed run draws exactly the batches
// the uninterrupted run would have.
//
// Batch of step s: the global sample positions g = s*B .. s*B+B-1; epoch e = g / N; the
// image is perm_e(g mod N), where perm_e is a Fisher-Yates shuffle keyed by (seed, e); with
// random_flip, it is mirrored left-right when Philox(seed, flip stream, g) < 0.5. Pixels map
// to [-1, 1] as u8 / 127.5 - 1. Output NHWC f32.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  virtual int64_t size() const = 0;
  virtual int64_t height() const = 0;
  virtual int64_t width() const = 0;
  virtual int64_t channels() const { return 3; }
  // Writes image i as (H, W, C) bytes.
  virtual void get(int64_t i, uint8_t* out) const = 0;
};

class ImageBatcher {
 public:
  ImageBatcher(std::shared_ptr<const ImageDataset> data, int64_t batch, uint64_t seed,
               bool random_flip);
  // Samples [first, first + count) of step's batch (count < 0: to its end; a shard of a
  // data-parallel step reads only its own), (count, H, W, C) f32 in [-1, 1].
  Tensor batch(int64_t step, int64_t first = 0, int64_t count = -1);
  // The same batch as raw bytes, not yet flipped, with the flip rule: sample j is mirrored
  // when philox_uniform(flip_seed, flip_stream, flip_first + j) < 0.5. The fused loss
  // decodes bytes on the GPU: a quarter of the bytes to copy and read.
  struct Bytes {
    Tensor images;  // (B, H, W, C) u8
    bool flip = false;
    uint64_t flip_seed = 0, flip_stream = 0, flip_first = 0;
  };
  Bytes batch_bytes(int64_t step, int64_t first = 0, int64_t count = -1);

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);

  std::shared_ptr<const ImageDataset> data_;
  int64_t batch_;
  uint64_t seed_;
  bool flip_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Images [first, first + count) in order, (count, H, W, C) f32 in [-1, 1] (evaluation,
// export).
Tensor dataset_images(const ImageDataset& data, int64_t first, int64_t count);

// NHWC f32 in [-1, 1] -> bytes (clamped, rounded).
std::vector<uint8_t> to_bytes(const Tensor& images);
// A grid of images (N, H, W, C) in [-1, 1], C = 3 or 1 (grey), `cols` per row with a
// 2-pixel border, as PNG.
void write_image_grid(const std::string& path, const Tensor& images, int64_t cols);

}  // namespace ddpm
