// Fashion-MNIST (Zalando): 28x28 grey images of clothing in 10 classes, 60,000 for training
// and 10,000 for testing, as Debian's dataset-fashion-mnist installs them
// (/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, read
// by models/data/idx.h). Served as 1-channel (grey) or 3-channel (grey repeated) images, at
// 28x28 or centred on a 32x32 black canvas (2 pixels each side: the size the U-Net's
// halving levels and CIFAR-shaped models want). The images must be (N, 28, 28), the labels
// (N) in 0-9, N the same in both: otherwise an error naming the file.
#pragma once

#include <string>
#include <vector>

#include "models/data/image_dataset.h"

namespace ddpm {

class FashionMnist : public ImageDataset {
 public:
  static constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";
  static constexpr const char* kClasses[10] = {"T-shirt/top", "trouser", "pullover", "dress",
                                               "coat", "sandal", "shirt", "sneaker", "bag",
                                               "ankle boot"};

  // split: "train" or "test"; size 28 or 32; channels 1 or 3; classes: keep only these labels.
  static FashionMnist load(const std::string& dir, const std::string& split, int64_t size,
                           int64_t channels, const std::vector<int64_t>& classes = {});
  static FashionMnist load_files(const std::string& images, const std::string& labels,
                                 int64_t size, int64_t channels,
                                 const std::vector<int64_t>& classes = {});

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t height() const override { return size_; }
  int64_t width() const override { return size_; }
  int64_t channels() const override { return channels_; }
  void get(int64_t i, uint8_t* out) const override;
  int label(int64_t i) const { return labels_.at(static_cast<size_t>(i)); }

 private:
  std::vector<uint8_t> pixels_;  // (N, 28, 28)
  std::vector<int> labels_;
  int64_t size_ = 28, channels_ = 1;
};

}  // namespace ddpm
