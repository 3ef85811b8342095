// Image data: the CIFAR-10 binary loader on files the test writes (valid, truncated, empty,
// missing, corrupt), the synthetic dataset and its validity check, the batcher.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "engine/file_io.h"
#include "models/data/cifar10.h"
#include "models/data/image_dataset.h"
#include "models/data/synthetic_images.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

// A CIFAR-10 record: label, then R, G, B planes; pixel p of channel c = (label*7 + c*50 + p) % 256.
std::vector<uint8_t> record(uint8_t label) {
  std::vector<uint8_t> r(3073);
  r[0] = label;
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 1024; ++p) r[1 + c * 1024 + p] = static_cast<uint8_t>((label * 7 + c * 50 + p) % 256);
  return r;
}

std::string write_records(const std::string& name, const std::vector<uint8_t>& labels,
                          size_t drop_bytes = 0) {
  std::vector<uint8_t> bytes;
  for (uint8_t l : labels) {
    const std::vector<uint8_t> r = record(l);
    bytes.insert(bytes.end(), r.begin(), r.end());
  }
  bytes.resize(bytes.size() - drop_bytes);
  const std::string path = ::testing::TempDir() + "/" + name;
  write_file_atomic(path, bytes.data(), bytes.size());
  return path;
}

TEST(Cifar10, LoadsRecordsAsNhwc) {
  const std::string f = write_records("ok.bin", {3, 9, 0});
  const Cifar10 d = Cifar10::load_files({f}, {});
  ASSERT_EQ(d.size(), 3);
  EXPECT_EQ(d.label(1), 9);
  std::vector<uint8_t> img(3072);
  d.get(1, img.data());
  // pixel p = 37 (row 1, column 5): channels interleaved
  for (int c = 0; c < 3; ++c) EXPECT_EQ(img[37 * 3 + c], (9 * 7 + c * 50 + 37) % 256);
  const Cifar10 only = Cifar10::load_files({f}, {0, 3});
  EXPECT_EQ(only.size(), 2);
  EXPECT_EQ(only.label(0), 3);
  EXPECT_EQ(only.label(1), 0);
}

TEST(Cifar10, BadFilesAreClearErrors) {
  const std::string truncated = write_records("truncated.bin", {1, 2}, 100);
  expect_error([&] { Cifar10::load_files({truncated}, {}); },
               {"truncated.bin", "6046 bytes", "not a multiple", "3073"});
  const std::string empty = write_records("empty.bin", {});
  expect_error([&] { Cifar10::load_files({empty}, {}); }, {"empty.bin", "is empty"});
  expect_error([&] { Cifar10::load(::testing::TempDir() + "/nowhere", true, {}); },
               {"cannot open", "nowhere/data_batch_1.bin"});
  std::vector<uint8_t> bad = record(4);
  bad[0] = 200;
  const std::string corrupt = ::testing::TempDir() + "/corrupt.bin";
  write_file_atomic(corrupt, bad.data(), bad.size());
  expect_error([&] { Cifar10::load_files({corrupt}, {}); }, {"corrupt.bin", "record 0", "label 200"});
  bad[0] = 10;  // the first label past the classes
  write_file_atomic(corrupt, bad.data(), bad.size());
  expect_error([&] { Cifar10::load_files({corrupt}, {}); },
               {"corrupt.bin", "record 0", "label 10"});
  const std::string ok = write_records("ok2.bin", {1});
  expect_error([&] { Cifar10::load_files({ok}, {7}); }, {"no images left"});
  expect_error([&] { Cifar10::load_files({ok}, {12}); }, {"12 is not a class"});
  expect_error([&] { Cifar10::load_files({ok}, {10}); }, {"10 is not a class"});
}

TEST(SyntheticImages, DeterministicAndValidByTheirOwnCheck) {
  const SyntheticImages a(1000, 5), b(1000, 5), c(1000, 6);
  std::vector<uint8_t> x(3072), y(3072), z(3072);
  double worst_roughness = 0, least_contrast = 1e9, worst_halo = 0, worst_std = 0;
  int64_t min_area = 1 << 20, max_area = 0;
  for (int64_t i = 0; i < 500; ++i) {
    a.get(i, x.data());
    b.get(i, y.data());
    ASSERT_EQ(x, y);
    const ImageValidity v = check_synthetic_image(x.data());
    EXPECT_TRUE(v.valid) << "image " << i << ": roughness " << v.roughness << ", contrast "
                         << v.contrast << ", area " << v.shape_area << ", largest piece "
                         << v.largest_piece << ", colour std " << v.shape_colour_std
                         << ", halo " << v.halo;
    worst_roughness = std::max(worst_roughness, v.roughness);
    least_contrast = std::min(least_contrast, v.contrast);
    min_area = std::min(min_area, v.shape_area);
    max_area = std::max(max_area, v.shape_area);
    worst_halo = std::max(worst_halo, v.halo);
    worst_std = std::max(worst_std, v.shape_colour_std);
  }
  c.get(0, z.data());
  EXPECT_NE(x, z) << "another seed, another set";
  // The thresholds sit clear of the data: roughness 6, contrast 60, area 30-260, colour
  // std 12, halo 0.2.
  EXPECT_LT(worst_roughness, 3.0);
  EXPECT_GT(least_contrast, 80.0);
  EXPECT_GE(min_area, 45);
  EXPECT_LE(max_area, 230);
  EXPECT_EQ(worst_halo, 0.0) << "the data's edges are sharp";
  EXPECT_EQ(worst_std, 0.0) << "the data's shapes are one colour";
}

// 3x3 box blur, `passes` times (edges clamped).
std::vector<uint8_t> blurred(std::vector<uint8_t> img, int passes) {
  for (int k = 0; k < passes; ++k) {
    const std::vector<uint8_t> src = img;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        for (int c = 0; c < 3; ++c) {
          int sum = 0;
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              const int yy = std::clamp(y + dy, 0, 31), xx = std::clamp(x + dx, 0, 31);
              sum += src[(yy * 32 + xx) * 3 + c];
            }
          img[(y * 32 + x) * 3 + c] = static_cast<uint8_t>((sum + 4) / 9);
        }
  }
  return img;
}

// What the old check (roughness and contrast only) let through, seen on samples of a 60-step
// model: soft blobs. A shape blurred once with a 3x3 box has a halo or a graded colour; two
// shapes are two pieces.
TEST(SyntheticImages, BlurredShapesAndTwoShapesAreInvalid) {
  const SyntheticImages data(100, 5);
  std::vector<uint8_t> img(3072), other(3072);
  int blurred_valid = 0, doubled_valid = 0, pairs = 0;
  for (int64_t i = 0; i < 50; ++i) {
    data.get(i, img.data());
    const std::vector<uint8_t> soft = blurred(img, 1);
    EXPECT_LE(check_synthetic_image(soft.data()).roughness, 6.0) << "smooth enough for the old check";
    blurred_valid += check_synthetic_image(soft.data()).valid;
    // paste the shape of image i+50 (pixels off its row's background) into image i
    data.get(i + 50, other.data());
    std::vector<uint8_t> both = img;
    int64_t overlap = 0, pasted = 0;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        const uint8_t* o = &other[(y * 32 + x) * 3];
        const uint8_t* bg = &other[(y * 32 + (x < 16 ? 31 : 0)) * 3];
        if (std::abs(o[0] - bg[0]) + std::abs(o[1] - bg[1]) + std::abs(o[2] - bg[2]) < 30) continue;
        ++pasted;
        for (int c = 0; c < 3; ++c) both[(y * 32 + x) * 3 + c] = o[c];
      }
    const ImageValidity one = check_synthetic_image(img.data());
    const ImageValidity two = check_synthetic_image(both.data());
    // count only pairs whose shapes do not touch (the area grew by the whole paste)
    overlap = one.shape_area + pasted - two.shape_area;
    if (overlap == 0 && two.largest_piece < 0.9) {
      ++pairs;
      doubled_valid += two.valid;
    }
  }
  EXPECT_EQ(blurred_valid, 0);
  EXPECT_GE(pairs, 10) << "the test needs separated pairs";
  EXPECT_EQ(doubled_valid, 0);
}

TEST(SyntheticImages, NoiseAndBlankImagesAreInvalid) {
  const Tensor noise = test::random_tensor({20, 32, 32, 3}, 3, DType::F32, 0.5);
  const SampleQuality q = synthetic_quality(noise);
  EXPECT_EQ(q.valid_fraction, 0.0);
  EXPECT_GT(q.mean_roughness, 20.0);
  EXPECT_EQ(synthetic_quality(Tensor::zeros(Shape{4, 32, 32, 3})).valid_fraction, 0.0)
      << "no shape: no contrast";
  EXPECT_EQ(synthetic_quality(Tensor::full(Shape{4, 32, 32, 3}, 0.3)).valid_fraction, 0.0);
  // Real data through the same float path scores 100%, and is smooth.
  ImageBatcher batcher(std::make_shared<SyntheticImages>(100, 1), 50, 1, true);
  const SampleQuality d = synthetic_quality(batcher.batch(0));
  EXPECT_EQ(d.valid_fraction, 1.0);
  EXPECT_LT(d.mean_roughness, 3.0);
}

// n RGB images of h x w whose first pixel encodes the index (`step` i in its three channels);
// byte k past those holds 255 - k.
class IndexedImages : public ImageDataset {
 public:
  IndexedImages(int64_t n, int64_t h, int64_t w, int step) : n_(n), h_(h), w_(w), step_(step) {}
  int64_t size() const override { return n_; }
  int64_t height() const override { return h_; }
  int64_t width() const override { return w_; }
  void get(int64_t i, uint8_t* out) const override {
    for (int64_t k = 0; k < h_ * w_ * 3; ++k)
      out[k] = static_cast<uint8_t>(k < 3 ? step_ * i : 255 - k);
  }

 private:
  int64_t n_, h_, w_;
  int step_;
};

TEST(ImageBatcher, EpochsVisitEveryImageOnceAndAreReproducible) {
  // 12 images whose first pixel encodes the index; batches of 4: an epoch is 3 steps.
  auto data = std::make_shared<IndexedImages>(12, 2, 2, 10);
  ImageBatcher a(data, 4, 9, false), b(data, 4, 9, false);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int> seen;
    for (int s = 0; s < 3; ++s) {
      const std::vector<float> v = a.batch(epoch * 3 + s).to_vector<float>();
      for (int j = 0; j < 4; ++j) seen.insert(static_cast<int>(std::lround((v[j * 12] + 1) * 127.5 / 10)));
    }
    EXPECT_EQ(seen.size(), 12u) << "epoch " << epoch;
  }
  EXPECT_EQ(a.batch(4).to_vector<float>(), b.batch(4).to_vector<float>()) << "a step's batch is fixed";
  EXPECT_NE(a.batch(0).to_vector<float>(), a.batch(3).to_vector<float>()) << "epochs reshuffle";
  // Flip mirrors left-right: pixel (0, 1) channel 0 holds 255 - 3 = 252, so a mirrored image
  // starts with 252 and an unmirrored one with 10 i <= 110.
  ImageBatcher f(data, 12, 9, true);
  const std::vector<float> v = f.batch(0).to_vector<float>();
  int mirrored = 0;
  for (int j = 0; j < 12; ++j) {
    const long first = std::lround((v[j * 12] + 1) * 127.5);
    ASSERT_TRUE(first == 252 || first <= 110);
    mirrored += first == 252;
    if (first == 252) {
      EXPECT_EQ(std::lround((v[j * 12 + 3] + 1) * 127.5) % 10, 0);
    }
  }
  EXPECT_GT(mirrored, 0);
  EXPECT_LT(mirrored, 12);
  // A part of a step's batch (a micro-batch, a rank's share) is those samples of the whole
  // batch, flips included: a sample's flip is drawn by its place in the run, not in the part.
  for (int64_t step : {0, 5}) {
    const std::vector<float> whole = f.batch(step).to_vector<float>();
    const std::vector<float> part = f.batch(step, 4, 5).to_vector<float>();
    EXPECT_EQ(part, std::vector<float>(whole.begin() + 4 * 12, whole.begin() + 9 * 12))
        << "step " << step;
  }
  expect_error([&] { f.batch(0, 10, 3); }, {"samples [10, 13) of a batch of 12"});
}

// The shuffle draws every order of an epoch alike (Fisher-Yates, each element's place drawn
// from all the places left, its own included): the 6 orders of 3 images over 1200 epochs,
// each about 200 times (a fixed draw, so a fixed count; one short of 120 or past 280 would
// be a biased shuffle: Sattolo's variant, which never leaves an element in place, draws
// only the two cyclic orders).
TEST(ImageBatcher, EveryOrderOfAnEpochIsDrawnAlike) {
  ImageBatcher b(std::make_shared<IndexedImages>(3, 1, 1, 100), 3, 21, false);
  std::map<std::vector<long>, int> orders;
  for (int epoch = 0; epoch < 1200; ++epoch) {
    const std::vector<float> v = b.batch(epoch).to_vector<float>();
    std::vector<long> order;
    for (int j = 0; j < 3; ++j) order.push_back(std::lround((v[j * 3] + 1) * 127.5 / 100));
    ++orders[order];
  }
  EXPECT_EQ(orders.size(), 6u);
  for (const auto& [order, count] : orders) {
    EXPECT_GT(count, 120) << order[0] << order[1] << order[2];
    EXPECT_LT(count, 280) << order[0] << order[1] << order[2];
  }
}

// Images back to bytes: [-1, 1] to [0, 255], rounded to the nearest (0 is 127.5: 128) and
// clamped.
TEST(ImageBytes, RoundToTheNearestAndClamp) {
  const Tensor images = Tensor::from_vector(
      Shape{1, 1, 2, 3}, std::vector<float>{-1.0f, 1.0f, 0.0f, -2.0f, 3.0f, 0.9f / 127.5f - 1.0f});
  EXPECT_EQ(to_bytes(images), (std::vector<uint8_t>{0, 255, 128, 0, 255, 1}));
}

}  // namespace
}  // namespace ddpm
