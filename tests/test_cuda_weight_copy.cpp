// The bf16 copy of the weights (engine/weight_copy.h): it is bf16(w) with the CPU's rounding
// after every kind of write to the weights (initialisation, a checkpoint's copy, the EMA
// swapped in, accumulate, scale, zero); AdamW writes it in its own pass (no refresh after a
// step, refused steps included); the kernels that read it (v4, cuDNN bf16, the bf16 linear
// GEMMs, on fp32 and on bf16 activations) give the bits they give when they round w
// themselves; and a model trained on the GPU with the copy gives, step after step, the bits of
// the same training without one. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "engine/optim.h"
#include "engine/parameters.h"
#include "engine/weight_copy.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/linear.cuh"
#include "models/unet/image_train.h"
#include "tests/cuda_model_config.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using detail::bf16_bits;  // a bf16 tensor's bits, as the kernels' bf16 entries take them

std::vector<uint16_t> device_bits(const uint16_t* p, int64_t n) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  device_copy(out.data(), Device::CPU, p, Device::CUDA, out.size() * sizeof(uint16_t));
  return out;
}

// What the copy must hold: the CPU's round-to-nearest-even of w's current values.
std::vector<uint16_t> rounded_bits(const Tensor& w) {
  std::vector<uint16_t> out;
  for (const bf16& b : cast(w.to(Device::CPU), DType::BF16).to_vector<bf16>())
    out.push_back(b.bits);
  return out;
}

std::vector<uint16_t> copy_bits(const Tensor& w) {
  const uint16_t* p = bf16_copy_of(w);
  EXPECT_NE(p, nullptr) << w.describe();
  return p ? device_bits(p, w.numel()) : std::vector<uint16_t>{};
}

Tensor random_on_gpu(const Shape& s, uint64_t stream, double scale = 1.0) {
  return test::random_tensor(s, stream, DType::F32, scale).to(Device::CUDA);
}

struct TwoParameters {
  ParameterStore store;
  Tensor a, b;
  TwoParameters() {
    a = store.add("a", Shape{3, 70}, Init::normal(1.0));
    b = store.add("b", Shape{5}, Init::uniform(0.5));
    store.finalize(Device::CUDA, DType::F32, 7);
  }
};

TEST(CudaWeightCopy, IsTheRoundedWeightsAfterEveryWrite) {
  REQUIRE_GPU();
  TwoParameters p;
  EXPECT_EQ(bf16_copy_of(p.a), nullptr) << "a copy before keep_bf16_copy";
  keep_bf16_copy(p.store.flat_data());
  EXPECT_EQ(copy_bits(p.a), rounded_bits(p.a)) << "the initialisation";
  EXPECT_EQ(copy_bits(p.b), rounded_bits(p.b));
  p.a.copy_from(random_on_gpu(p.a.shape(), 1));  // a checkpoint's tensor
  EXPECT_EQ(copy_bits(p.a), rounded_bits(p.a)) << "copy_from";
  load_flat(p.store, random_on_gpu(p.store.flat_data().shape(), 2));  // the EMA swapped in
  EXPECT_EQ(copy_bits(p.a), rounded_bits(p.a)) << "load_flat";
  EXPECT_EQ(copy_bits(p.b), rounded_bits(p.b)) << "load_flat";
  accumulate(p.b, random_on_gpu(p.b.shape(), 3), -0.25);  // an SGD step
  EXPECT_EQ(copy_bits(p.b), rounded_bits(p.b)) << "accumulate";
  scale_in_place(p.a, 0.5);
  EXPECT_EQ(copy_bits(p.a), rounded_bits(p.a)) << "scale_in_place";
  p.b.zero();
  EXPECT_EQ(copy_bits(p.b), std::vector<uint16_t>(5, 0)) << "zero";
  // other tensors have none; a CPU buffer cannot have one
  EXPECT_EQ(bf16_copy_of(random_on_gpu(Shape{4}, 4)), nullptr);
  ParameterStore cpu;
  cpu.add("w", Shape{4});
  cpu.finalize(Device::CPU);
  test::expect_error([&] { keep_bf16_copy(cpu.flat_data()); }, {"not an f32 buffer on the GPU"});
}

// The optimiser writes the copy beside the weights: after a step the copy is fresh without a
// refresh (its version is the buffer's) and holds the new weights' rounding, for the plain
// step, an applied gated step, and a refused one (which writes neither).
TEST(CudaWeightCopy, AdamWWritesItInItsOwnPass) {
  REQUIRE_GPU();
  TwoParameters p;
  keep_bf16_copy(p.store.flat_data());
  AdamW opt(p.store, AdamWConfig{});
  Ema ema(p.store, 0.9);
  Storage& storage = *p.store.flat_data().impl().storage;
  const int64_t total = p.store.flat_data().numel();
  const auto expect_written = [&](const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(storage.bf16_copy().version, storage.version()) << "refreshed, not written";
    EXPECT_EQ(device_bits(static_cast<const uint16_t*>(storage.bf16_copy().bits->data()), total),
              rounded_bits(p.store.flat_data()));
  };
  const std::vector<float> before = p.store.flat_data().to(Device::CPU).to_vector<float>();
  p.store.flat_grad().copy_from(random_on_gpu(Shape{total}, 5));
  opt.step(1e-2, &ema, 0);
  EXPECT_NE(p.store.flat_data().to(Device::CPU).to_vector<float>(), before) << "no update";
  expect_written("step");
  for (const float loss : {1.0f, std::nanf("")}) {
    SCOPED_TRACE(loss == loss ? "applied gate" : "refused gate");
    p.store.flat_grad().copy_from(random_on_gpu(Shape{total}, 6));
    const Tensor summary = opt.step_summary(
        Tensor(), Tensor::from_vector<float>(Shape{}, {loss}).to(Device::CUDA), 1.0);
    opt.gated_step(1e-2, summary, &ema, 1);
    const StepGate gate = summary_gate(summary.to(Device::CPU).to_vector<double>());
    EXPECT_EQ(gate.applied, loss == loss ? 1.0 : 0.0);
    opt.resolve_gated_step(gate);
    expect_written("gated step");
  }
}

// The kernels given the copy give the bits they give rounding w themselves, in each bf16
// math and storage: the dgrad's copy read in place (Cout a multiple of 8) and staged (not).
TEST(CudaWeightCopy, KernelsReadingItGiveTheBitsOfRoundingTheWeights) {
  REQUIRE_GPU();
  for (const int64_t c_out : {16, 12}) {
    ParameterStore store;
    Tensor w = store.add("w", Shape{3, 3, 8, c_out}, Init::normal(0.2));
    Tensor lw = store.add("lw", Shape{24, c_out}, Init::normal(0.2));
    store.finalize(Device::CUDA, DType::F32, 11);
    keep_bf16_copy(store.flat_data());
    Conv2dShape s;
    s.n = 2, s.h = 6, s.w = 5, s.c_in = 8, s.c_out = c_out, s.kh = s.kw = 3;
    s.pad_top = s.pad_left = s.pad_bottom = s.pad_right = 1;
    const Shape xs{s.n, s.h, s.w, s.c_in}, ys{s.n, s.out_h(), s.out_w(), s.c_out};
    for (const auto algo : {cuda::ConvAlgo::Bf16TensorCore, cuda::ConvAlgo::CudnnBf16}) {
      for (const DType act : {DType::F32, DType::BF16}) {
        SCOPED_TRACE(std::string(cuda::conv_algo_name(algo)) + ", " + dtype_name(act) +
                     " activations, Cout " + std::to_string(c_out));
        const Tensor x = cast(random_on_gpu(xs, 20), act), dy = cast(random_on_gpu(ys, 21), act);
        const int64_t floats = std::max(cuda::conv2d_forward_workspace(s, algo),
                                        cuda::conv2d_backward_workspace(s, algo));
        const Tensor ws = Tensor::zeros(Shape{floats}, DType::F32, Device::CUDA);
        std::vector<std::vector<float>> out[2];
        for (const bool with_copy : {false, true}) {
          const uint16_t* wb = with_copy ? bf16_copy_of(w) : nullptr;
          const Tensor y = Tensor::zeros(ys, act, Device::CUDA);
          const Tensor dx = Tensor::zeros(xs, act, Device::CUDA);
          const Tensor dw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
          if (act == DType::BF16) {
            cuda::conv2d_forward(s, bf16_bits(x), w.data<float>(), nullptr, bf16_bits(y), algo,
                                 ws.data<float>(), nullptr, nullptr, wb);
            cuda::conv2d_backward(s, bf16_bits(x), w.data<float>(), bf16_bits(dy), bf16_bits(dx),
                                  dw.data<float>(), nullptr, algo, ws.data<float>(), wb);
          } else {
            cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), nullptr, y.data<float>(),
                                 algo, ws.data<float>(), nullptr, nullptr, wb);
            cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(),
                                  dx.data<float>(), dw.data<float>(), nullptr, algo,
                                  ws.data<float>(), wb);
          }
          for (const Tensor& t : {y, dx, dw})
            out[with_copy].push_back(cast(t, DType::F32).to(Device::CPU).to_vector<float>());
        }
        EXPECT_EQ(out[1], out[0]);
      }
    }
    // linear: y = x w on (10, 24) x (24, Cout), fp32 activations and bf16 ones
    const LinearShape ls{10, 24, c_out};
    const Tensor lx = random_on_gpu(Shape{10, 24}, 30), ldy = random_on_gpu(Shape{10, c_out}, 31);
    std::vector<std::vector<float>> out[2];
    for (const bool with_copy : {false, true}) {
      SCOPED_TRACE("linear");
      const uint16_t* wb = with_copy ? bf16_copy_of(lw) : nullptr;
      const int64_t floats = std::max({cuda::linear_bf16_forward_workspace(ls),
                                       cuda::linear_bf16_backward_workspace(ls),
                                       cuda::linear_bf16_activations_forward_workspace(ls),
                                       cuda::linear_bf16_activations_backward_workspace(ls)});
      const Tensor ws = Tensor::zeros(Shape{floats}, DType::F32, Device::CUDA);
      const Tensor y = Tensor::zeros(Shape{10, c_out}, DType::F32, Device::CUDA);
      const Tensor dx = Tensor::zeros(Shape{10, 24}, DType::F32, Device::CUDA);
      cuda::linear_bf16_forward(ls, lx.data<float>(), lw.data<float>(), nullptr, y.data<float>(),
                                ws.data<float>(), wb);
      cuda::linear_bf16_backward(ls, lx.data<float>(), lw.data<float>(), ldy.data<float>(),
                                 dx.data<float>(), nullptr, nullptr, ws.data<float>(), wb);
      const Tensor x16 = cast(lx, DType::BF16), dy16 = cast(ldy, DType::BF16);
      const Tensor y16 = Tensor::zeros(Shape{10, c_out}, DType::BF16, Device::CUDA);
      const Tensor dx16 = Tensor::zeros(Shape{10, 24}, DType::BF16, Device::CUDA);
      cuda::linear_bf16_forward(ls, bf16_bits(x16), lw.data<float>(), nullptr, bf16_bits(y16),
                                ws.data<float>(), wb);
      cuda::linear_bf16_backward(ls, bf16_bits(x16), lw.data<float>(), bf16_bits(dy16),
                                 bf16_bits(dx16), nullptr, nullptr, ws.data<float>(), wb);
      for (const Tensor& t : {y, dx, y16, dx16})
        out[with_copy].push_back(cast(t, DType::F32).to(Device::CPU).to_vector<float>());
    }
    EXPECT_EQ(out[1], out[0]) << "linear, Cout " << c_out;
  }
}

// A model trained on the GPU in bf16 keeps the copy (ImageRun) and reads it in every product;
// the same training with the copy dropped converts the weights at each call. Both give the
// same bits, step after step: the copy is never stale, neither after the optimiser's steps
// nor after a checkpoint of the initial weights is loaded into both between steps.
TEST(CudaWeightCopy, TrainingWithItIsTrainingWithoutIt) {
  REQUIRE_GPU();
  const std::string path = ::testing::TempDir() + "/weight-copy.safetensors";
  // (on cuDNN under the emulation, whose emulated v4 takes minutes per step here: measured)
  const std::vector<std::string> keys = {
      "activations=bf16", test::small_shapes_only() ? "cuda_conv=cudnn" : "cuda_conv=tiled"};
  ImageRun with(test::small_unet_config("cuda", "bf16", keys));
  ImageRun without(test::small_unet_config("cuda", "bf16", keys));
  ASSERT_TRUE(has_bf16_copy(with.store().flat_data()));
  drop_bf16_copy(without.store().flat_data());  // the kernels convert at each call
  without.save_checkpoint(path);  // the initial weights
  for (int step = 0; step < 3; ++step) {
    if (step == 2) {  // back to them: the copy, made from step 1's weights, is stale
      with.load_checkpoint(path);
      without.load_checkpoint(path);
    }
    const StepStats a = with.step(), b = without.step();
    EXPECT_EQ(a.loss, b.loss) << "step " << step;
    EXPECT_EQ(with.store().flat_data().to(Device::CPU).to_vector<float>(),
              without.store().flat_data().to(Device::CPU).to_vector<float>())
        << "step " << step;
  }
  EXPECT_FALSE(has_bf16_copy(without.store().flat_data()));
  set_precision(Precision::F32);
  set_activation_dtype(DType::F32);
  set_conv_algorithm(ConvAlgorithm::Tiled);
}

}  // namespace
}  // namespace ddpm
