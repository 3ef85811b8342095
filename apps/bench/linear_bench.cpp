// kernel-bench linear: the CIFAR-10 model's linear layers (the attention's qkv and output
// projections at 16x16, a ResBlock's 1x1 skip, the time-embedding MLP) through the engine's
// three cuBLAS paths (kernels/cuda/linear.cu): SGEMM in fp32, SGEMM in TF32 math on operands
// rounded to TF32 beforehand (the rounding kernel timed with it, as the engine runs it), and
// cublasGemmEx on bf16 copies with fp32 accumulation (the conversions timed with it); and as
// training on bf16 activations runs it: x, dy, y and dx bf16 tensors read and written as they
// are, w from the weights' bf16 copy (dx rounded in cuBLAS's epilogue). Each forward twice:
// the bias added by a second pass over the product (the rows named as before, with
// cuBLASLt's epilogue switched off: y = bf16(sum + b) by a pass over the fp32 sum on bf16
// activations), and "..., bias in cuBLASLt's epilogue", the engine's default
// (kernels/cuda/gemm_lt.cuh: y stored once; on bf16 activations b from the copy too).
//
// FLOPs: forward 2 M K N, backward (dx and dw) 4 M K N; the bias is not counted. Each
// variant's rate is judged against the peak of its arithmetic (FP32 FMA, TF32 or bf16 tensor
// cores).
#include <algorithm>
#include <cstdio>
#include <functional>

#include "apps/bench/bench.h"
#include "engine/ops.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm_lt.cuh"
#include "kernels/cuda/linear.cuh"

namespace ddpm::bench {

void bench_linear(const Options& o, Timer& timer, Report& report) {
  struct Case {
    const char* name;
    int64_t tokens_per_image, k, n;  // m = batch x tokens
  } cases[] = {{"attention qkv 16x16", 256, 256, 768},
               {"attention proj 16x16", 256, 256, 256},
               {"ResBlock skip 16x16 128->256", 256, 128, 256},
               {"time MLP 512->512", 1, 512, 512}};
  for (const Case& c : cases) {
    const LinearShape s{o.batch * c.tokens_per_image, c.k, c.n};
    char shape[128];
    std::snprintf(shape, sizeof shape, "%s M%lld K%lld N%lld", c.name,
                  static_cast<long long>(s.m), static_cast<long long>(s.k),
                  static_cast<long long>(s.n));
    const double fwd_flops = 2.0 * s.m * s.k * s.n;
    const Tensor x = randn(Shape{s.m, s.k}, 1, 1, Device::CUDA);
    const Tensor w = scale(randn(Shape{s.k, s.n}, 1, 2, Device::CUDA), 0.05);
    const Tensor b = randn(Shape{s.n}, 1, 3, Device::CUDA);
    const Tensor dy = randn(Shape{s.m, s.n}, 1, 4, Device::CUDA);
    const Tensor y = Tensor::empty(Shape{s.m, s.n}, DType::F32, Device::CUDA);
    const Tensor dx = Tensor::zeros(x.shape(), DType::F32, Device::CUDA);
    const Tensor dw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
    const Tensor db = Tensor::zeros(b.shape(), DType::F32, Device::CUDA);
    const Tensor xr = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
    const Tensor wr = Tensor::empty(w.shape(), DType::F32, Device::CUDA);
    const Tensor dyr = Tensor::empty(dy.shape(), DType::F32, Device::CUDA);
    const Tensor col = Tensor::empty(Shape{std::max<int64_t>(1, cuda::linear_backward_workspace(s))},
                                     DType::F32, Device::CUDA);
    const Tensor ws = Tensor::empty(
        Shape{std::max(cuda::linear_bf16_forward_workspace(s), cuda::linear_bf16_backward_workspace(s))},
        DType::F32, Device::CUDA);
    const auto f = [](const Tensor& t) { return t.data<float>(); };
    // a forward with the bias by a second pass (`pass`), then in cuBLASLt's epilogue
    // (`epilogue`; both names written out, as scripts/bench_ratios.py finds them)
    const auto forward = [&](const char* pass, const char* epilogue,
                             const std::function<void()>& run) {
      cuda::lt::set_bias_epilogue(false);
      report.add_flops("linear fwd", shape, pass, timer.median_ms(run), fwd_flops);
      cuda::lt::set_bias_epilogue(true);
      report.add_flops("linear fwd", shape, epilogue, timer.median_ms(run), fwd_flops);
    };
    forward("SGEMM fp32", "SGEMM fp32, bias in cuBLASLt's epilogue",
            [&] { cuda::linear_forward(s, f(x), f(w), f(b), f(y)); });
    report.add_flops("linear bwd", shape, "SGEMM fp32", timer.median_ms([&] {
      cuda::linear_backward(s, f(x), f(w), f(dy), f(dx), f(dw), f(db), f(col));
    }), 2 * fwd_flops);
    forward("SGEMM TF32 (+ rounding)", "SGEMM TF32 (+ rounding), bias in cuBLASLt's epilogue", [&] {
      cuda::round_to_tf32(x.numel(), f(x), f(xr));
      cuda::round_to_tf32(w.numel(), f(w), f(wr));
      cuda::linear_forward(s, f(xr), f(wr), f(b), f(y), /*tf32=*/true);
    });
    report.add_flops("linear bwd", shape, "SGEMM TF32 (+ rounding)", timer.median_ms([&] {
      cuda::round_to_tf32(x.numel(), f(x), f(xr));
      cuda::round_to_tf32(w.numel(), f(w), f(wr));
      cuda::round_to_tf32(dy.numel(), f(dy), f(dyr));
      cuda::linear_backward(s, f(xr), f(wr), f(dyr), f(dx), f(dw), nullptr, nullptr, true);
      cuda::linear_backward(s, f(x), f(w), f(dy), nullptr, nullptr, f(db), f(col));
    }), 2 * fwd_flops);
    forward("GemmEx bf16 (+ conversion)",
            "GemmEx bf16 (+ conversion), bias in cuBLASLt's epilogue",
            [&] { cuda::linear_bf16_forward(s, f(x), f(w), f(b), f(y), f(ws)); });
    report.add_flops("linear bwd", shape, "GemmEx bf16 (+ conversion)", timer.median_ms([&] {
      cuda::linear_bf16_backward(s, f(x), f(w), f(dy), f(dx), f(dw), f(db), f(ws));
    }), 2 * fwd_flops);
    const Tensor x16 = cast(x, DType::BF16), dy16 = cast(dy, DType::BF16);
    const Tensor w16 = cast(w, DType::BF16), y16 = Tensor::empty(y.shape(), DType::BF16, Device::CUDA);
    const Tensor b16 = cast(b, DType::BF16);  // the bias's bf16 copy, as the weights' buffer keeps
    const Tensor dx16 = Tensor::zeros(x.shape(), DType::BF16, Device::CUDA);
    const Tensor ws16 = Tensor::empty(
        Shape{std::max<int64_t>(1, std::max(cuda::linear_bf16_activations_forward_workspace(s),
                                            cuda::linear_bf16_activations_backward_workspace(s)))},
        DType::F32, Device::CUDA);
    forward("GemmEx bf16, bf16 activations",
            "GemmEx bf16, bf16 activations, bias in cuBLASLt's epilogue", [&] {
      cuda::linear_bf16_forward(s, bf16_bits(x16), f(w), f(b), bf16_bits(y16), f(ws16),
                                bf16_bits(w16), bf16_bits(b16));
    });
    report.add_flops("linear bwd", shape, "GemmEx bf16, bf16 activations", timer.median_ms([&] {
      cuda::linear_bf16_backward(s, bf16_bits(x16), f(w), bf16_bits(dy16), bf16_bits(dx16), f(dw), f(db),
                                 f(ws16), bf16_bits(w16));
    }), 2 * fwd_flops);
  }
}

}  // namespace ddpm::bench
