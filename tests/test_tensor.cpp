// Tensor: creation, views, copies, dtype conversion, and clear errors on misuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/tensor.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

TEST(Tensor, CreationAndAccess) {
  Tensor t = Tensor::from_vector<float>(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.data<float>()[4], 5.0f);
  EXPECT_EQ(Tensor::zeros(Shape{3}).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(Tensor::full(Shape{2}, 2.5, DType::F64).to_vector<double>(),
            (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(Tensor::full(Shape{}, 7.0).item(), 7.0);
}

TEST(Tensor, ShapeBasics) {
  const Shape s{3, 5, 7, 65};
  EXPECT_EQ(s.numel(), 3 * 5 * 7 * 65);
  EXPECT_EQ(s.last(), 65);
  EXPECT_EQ(s.rows(), 105);
  EXPECT_EQ(s[-1], 65);
  EXPECT_EQ(s.with_last(4), (Shape{3, 5, 7, 4}));
  EXPECT_EQ(s.str(), "(3, 5, 7, 65)");
  EXPECT_EQ(Shape{}.numel(), 1);
  expect_error([] { Shape{1, 2, 3, 4, 5}; }, {"at most 4 dimensions"});
  expect_error([] { Shape{2, -1}; }, {">= 0", "-1"});
  expect_error([&] { (void)s[4]; }, {"dimension 4 out of range", "(3, 5, 7, 65)"});
}

TEST(Tensor, ViewSharesStorage) {
  Tensor t = Tensor::from_vector<float>(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor v = t.view(Shape{3, 2});
  v.data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[0], 42.0f);
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  expect_error([&] { t.view(Shape{4, 2}); }, {"view of", "(4, 2)", "element counts differ"});
}

TEST(Tensor, CloneIsDeep) {
  Tensor t = Tensor::from_vector<float>(Shape{2}, {1, 2});
  Tensor c = t.clone();
  c.data<float>()[0] = 9;
  EXPECT_EQ(t.data<float>()[0], 1.0f);
}

TEST(Tensor, DtypeMismatchIsAnError) {
  Tensor t = Tensor::zeros(Shape{2, 3}, DType::F64);
  expect_error([&] { t.data<float>(); }, {"f64", "accessed as f32", "(2, 3)"});
  expect_error([&] { t.to_vector<int32_t>(); }, {"f64", "read as i32"});
  expect_error([] { Tensor::from_vector<float>(Shape{2, 2}, {1, 2, 3}); },
               {"3 values for shape (2, 2)"});
  expect_error([&] { Tensor::zeros(Shape{3}).copy_from(t); }, {"differ in shape or dtype"});
  expect_error([] { Tensor().shape(); }, {"undefined tensor"});
}

TEST(Tensor, DtypeConversions) {
  Tensor f = Tensor::from_vector<float>(Shape{4}, {1.5f, -2.25f, 3.0f, 1e-3f});
  EXPECT_EQ(f.to(DType::F64).to_vector<double>(), (std::vector<double>{1.5, -2.25, 3.0, 1e-3f}));
  EXPECT_EQ(f.to(DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3, 0}));
  // bf16 keeps 8 significant bits: 1.5, -2.25 and 3 are exact; 1e-3 rounds to nearest.
  const std::vector<float> back = f.to(DType::BF16).to(DType::F32).to_vector<float>();
  EXPECT_EQ(back[0], 1.5f);
  EXPECT_EQ(back[1], -2.25f);
  EXPECT_EQ(back[2], 3.0f);
  EXPECT_NEAR(back[3], 1e-3f, 1e-3f / 256);
  EXPECT_NE(back[3], 1e-3f);
  // Round to nearest even at the halfway point: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  Tensor u = Tensor::from_vector<uint8_t>(Shape{2}, {0, 255});
  EXPECT_EQ(u.to(DType::F32).to_vector<float>(), (std::vector<float>{0, 255}));
}

// Sets poisoning on or off for its lifetime (engine/device.h), then puts it back.
class PoisonSetting {
 public:
  explicit PoisonSetting(bool on) : previous_(poison_new_memory()) { set_poison_new_memory(on); }
  ~PoisonSetting() { set_poison_new_memory(previous_); }

 private:
  bool previous_;
};

bool every_element_is_nan(const Tensor& t) {
  const std::vector<float> v = t.to(Device::CPU).to(DType::F32).to_vector<float>();
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isnan(x); });
}

// What the tests run with (DDPM_POISON_MEMORY=1): new memory reads as NaN in f32 and bf16,
// including a host block that the C library hands out again after a free.
TEST(Tensor, NewMemoryReadsAsNaNWhilePoisoned) {
  PoisonSetting on(true);
  for (int round = 0; round < 2; ++round) {
    Tensor f = Tensor::empty(Shape{3, 333}, DType::F32);
    Tensor b = Tensor::empty(Shape{77}, DType::BF16);
    EXPECT_TRUE(every_element_is_nan(f)) << "round " << round;
    EXPECT_TRUE(every_element_is_nan(b)) << "round " << round;
    f.zero();  // the next round's blocks are likely these, freed holding zeros
    b.zero();
  }
  EXPECT_EQ(Tensor::zeros(Shape{5}).to_vector<float>(), std::vector<float>(5, 0.0f));
}

// A block of the CUDA caching allocator is poisoned when it is handed out again, not only
// when cudaMalloc first gives it; the fill is not counted as the engine's memset.
TEST(Tensor, AReusedCudaBlockReadsAsNaNWhilePoisoned) {
  REQUIRE_GPU();
  PoisonSetting on(true);
  void* first = nullptr;
  {
    Tensor t = Tensor::empty(Shape{1000}, DType::F32, Device::CUDA);
    t.zero();
    first = t.raw();
  }
  const DeviceWorkCounts before = device_work_counts();
  Tensor again = Tensor::empty(Shape{1000}, DType::F32, Device::CUDA);
  EXPECT_EQ((device_work_counts() - before).memsets, 0u);
  EXPECT_EQ(again.raw(), first) << "the cache should hand out the block just freed";
  EXPECT_TRUE(every_element_is_nan(again));
}

TEST(Tensor, CudaWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; this checks its absence";
  Tensor t = Tensor::zeros(Shape{4});
  expect_error([&] { t.to(Device::CUDA); }, {"needs a CUDA device"});
  expect_error([] { Tensor::zeros(Shape{4}, DType::F32, Device::CUDA); },
               {"needs a CUDA device"});
}

TEST(Tensor, RoundTripThroughCuda) {
  REQUIRE_GPU();
  Tensor t = Tensor::from_vector<float>(Shape{3}, {1, 2, 3});
  Tensor d = t.to(Device::CUDA);
  EXPECT_EQ(d.device(), Device::CUDA);
  EXPECT_EQ(d.to(Device::CPU).to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(d.clone().to_vector<float>(), (std::vector<float>{1, 2, 3}));
  Tensor z = Tensor::zeros(Shape{5}, DType::F32, Device::CUDA);
  EXPECT_EQ(z.to_vector<float>(), std::vector<float>(5, 0.0f));
}

}  // namespace
}  // namespace ddpm
