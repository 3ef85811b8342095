// Images written the way the standard FID tools read them, so a user computes FID against a
// dataset in one command (README, "Judging a model"):
//   npz: one uncompressed NumPy archive, key arr_0, uint8 (N, H, W, 3) — what OpenAI's
//        guided-diffusion evaluator and clean-fid read;
//   png: a folder of 000000.png, 000001.png, ... — what pytorch-fid reads.
// Grey images are written with the grey in all three channels: the Inception network these
// tools run takes RGB. The npz is assembled in memory and written atomically (50,000 CIFAR
// images are 154 MB); PNGs are written as they come, into a folder that must be new or empty.
//
// Formats, from their specifications: NPY 1.0 (NumPy's format.py: magic \x93NUMPY, version
// 1.0, a little-endian uint16 header length, a Python dict literal padded with spaces to a
// multiple of 64 bytes ending in \n, then the C-order data) inside a ZIP archive (PKWARE
// APPNOTE: one local file header, the data stored (method 0) with its CRC-32, one central
// directory entry, the end record; no ZIP64, so under 4 GiB).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

enum class ImageFormat { Npz, Png };
ImageFormat parse_image_format(const std::string& name);  // "npz" | "png"

// An .npy file of uint8 values with this shape.
std::vector<uint8_t> encode_npy_u8(const std::vector<uint8_t>& values,
                                   const std::vector<int64_t>& shape);
// A ZIP archive holding one file, stored.
std::vector<uint8_t> encode_zip_stored(const std::string& name, const std::vector<uint8_t>& data);

class ImageWriter {
 public:
  // Checks the destination before any image exists: npz needs a .npz path in a writable
  // folder; png a folder that does not exist yet or is empty (created).
  ImageWriter(const std::string& path, ImageFormat format, int64_t total);
  // images: (n, H, W, C) in [-1, 1], C = 1 or 3; all calls the same H, W.
  void add(const Tensor& images);
  // npz: writes the archive. Checks that `total` images came.
  void finish();
  int64_t written() const { return count_; }

 private:
  std::string path_;
  ImageFormat format_;
  int64_t total_, count_ = 0, h_ = 0, w_ = 0;
  std::vector<uint8_t> rgb_;  // npz: all images so far, (count, H, W, 3)
};

}  // namespace ddpm
