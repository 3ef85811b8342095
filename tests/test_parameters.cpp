// The flat parameter buffer: windows, alignment, shared gradient buffer, errors.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "engine/parameters.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

TEST(Parameters, WindowsOnOneFlatBuffer) {
  ParameterStore store;
  Tensor w = store.add("layer.w", Shape{3, 5});
  Tensor b = store.add("layer.b", Shape{5});
  expect_error([&] { w.data<float>(); }, {"layer.w", "no storage"});
  store.finalize(Device::CPU);
  EXPECT_EQ(store.count(), 20);
  EXPECT_EQ(store.offset(0), 0);
  EXPECT_EQ(store.offset(1), ParameterStore::kAlignElems);  // 15 rounded up to 64
  EXPECT_EQ(store.flat_data().numel(), 2 * ParameterStore::kAlignElems);
  // Writing through a window writes the flat buffer at its offset.
  b.data<float>()[2] = 7.0f;
  EXPECT_EQ(store.flat_data().data<float>()[store.offset(1) + 2], 7.0f);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_TRUE(store.find("layer.b").same(b));
  expect_error([&] { store.find("layer.c"); }, {"no parameter named 'layer.c'"});
}

// Each window starts a multiple of 64 elements into a buffer that is itself aligned (host
// blocks to 64 bytes, CUDA blocks to 256), so kernels may read any parameter or gradient
// with 16-byte vector loads, cp.async or TMA: 64 bytes on the host, 256 on the GPU.
TEST(Parameters, EveryWindowIsAlignedForVectorLoads) {
  for (Device d : {Device::CPU, Device::CUDA}) {
    if (d == Device::CUDA && !cuda_available()) continue;
    ParameterStore store;
    for (int64_t n : {1, 3, 15, 64, 65, 1000}) store.add("p" + std::to_string(n), Shape{n});
    store.finalize(d);
    const uintptr_t align = d == Device::CPU ? 64 : 256;
    for (const Tensor& p : store.parameters()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p.raw()) % align, 0u) << p.name() << " on " << device_name(d);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p.grad().raw()) % align, 0u) << p.name() << " grad";
    }
  }
}

TEST(Parameters, GradientsLandInTheFlatGradBuffer) {
  ParameterStore store;
  Tensor w = store.add("w", Shape{2});
  Tensor v = store.add("v", Shape{2});
  store.finalize(Device::CPU, DType::F64);
  w.data<double>()[0] = 1.0;
  w.data<double>()[1] = 2.0;
  v.data<double>()[0] = 3.0;
  v.data<double>()[1] = 4.0;
  backward(sum(mul(w, v)));
  const std::vector<double> g = store.flat_grad().to_vector<double>();
  EXPECT_EQ(g[0], 3.0);
  EXPECT_EQ(g[1], 4.0);
  EXPECT_EQ(g[store.offset(1)], 1.0);
  EXPECT_EQ(g[store.offset(1) + 1], 2.0);
  EXPECT_EQ(g[2], 0.0) << "padding stays zero";
  // The grad tensor of a parameter is the window, and survives zero_grad.
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{3, 4}));
  w.zero_grad();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{0, 0}));
  backward(sum(mul(w, v)));
  store.zero_grad();
  for (double x : store.flat_grad().to_vector<double>()) EXPECT_EQ(x, 0.0);
}

TEST(Parameters, MisuseIsAnError) {
  ParameterStore store;
  store.add("a", Shape{1});
  expect_error([&] { store.add("a", Shape{2}); }, {"'a' is used twice"});
  expect_error([&] { store.zero_grad(); }, {"before finalize"});
  store.finalize(Device::CPU);
  expect_error([&] { store.add("b", Shape{1}); }, {"after finalize"});
  expect_error([&] { store.finalize(Device::CPU); }, {"called twice"});
}

}  // namespace
}  // namespace ddpm
