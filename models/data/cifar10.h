// CIFAR-10, binary version (data_batch_1..5.bin, test_batch.bin): records of 3073 bytes,
// a label byte (0-9) then the 32x32 image channel-planar (1024 R, 1024 G, 1024 B, each
// row-major). Loaded into memory as NHWC bytes. Every file is validated: missing, empty,
// a size that is not a multiple of 3073, a label outside 0-9: each an error naming the file
// (and the record).
#pragma once

#include <string>
#include <vector>

#include "models/data/image_dataset.h"

namespace ddpm {

class Cifar10 : public ImageDataset {
 public:
  static constexpr int64_t kRecordBytes = 3073;
  // The training files (data_batch_1..5.bin) or the test file (test_batch.bin) of `dir`;
  // class_filter: keep only these labels (empty: all).
  static Cifar10 load(const std::string& dir, bool train, const std::vector<int>& class_filter);
  // Specific files (tests).
  static Cifar10 load_files(const std::vector<std::string>& files,
                            const std::vector<int>& class_filter);

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t height() const override { return 32; }
  int64_t width() const override { return 32; }
  void get(int64_t i, uint8_t* out) const override;
  int label(int64_t i) const { return labels_.at(static_cast<size_t>(i)); }

 private:
  std::vector<uint8_t> pixels_;  // (N, 32, 32, 3)
  std::vector<int> labels_;
};

}  // namespace ddpm
