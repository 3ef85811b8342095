// kernel-bench: every CUDA kernel at the CIFAR-10 model's real shapes (batch 128), next to
// cuDNN for the convolutions.
//
// Method: each measurement runs a warm-up, then `reps` timed runs, each preceded by a write
// of a buffer twice the L2 size so no run finds its data in L2; the time of a run is taken
// with CUDA events around the launch(es) alone, and the median is reported. Figures:
// convolutions in TFLOP/s (2 * M * N * K flops) and as a fraction of the GPU's fp32 FMA
// peak; memory-bound kernels in GB/s (the bytes they must move at minimum) and as a fraction
// of peak memory bandwidth. Peaks: SMs x clock x FP32 lanes per SM x 2, and memory clock x
// bus width x 2 (DDR), from the device's attributes. Output: a table, and JSON (--json).
// Without a GPU it says so and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/file_io.h"
#include "engine/ops.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_check.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/resample.cuh"
#endif

#if DDPM_WITH_CUDA
namespace ddpm::bench {
namespace {

struct Peaks {
  std::string name;
  double fp32_tflops = 0, bandwidth_gbs = 0;
  size_t l2_bytes = 0;
};

Peaks device_peaks() {
  int dev = 0, clock_khz = 0, mem_clock_khz = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, dev));
  // FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86/89/90 and later.
  const int lanes = (prop.major == 8 && prop.minor == 0) ? 64 : 128;
  Peaks p;
  p.name = prop.name;
  p.fp32_tflops = 2.0 * prop.multiProcessorCount * lanes * clock_khz * 1e3 / 1e12;
  p.bandwidth_gbs = 2.0 * mem_clock_khz * 1e3 * (prop.memoryBusWidth / 8) / 1e9;
  p.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  return p;
}

class Timer {
 public:
  explicit Timer(size_t l2_bytes) : flush_bytes_(2 * std::max<size_t>(l2_bytes, 1 << 20)) {
    CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  // Median milliseconds of `fn` over `reps` runs after `warmup` runs, L2 flushed before each.
  double median_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20) {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaMemsetAsync(flush_, i, flush_bytes_, 0));
      CUDA_CHECK(cudaEventRecord(start_, 0));
      fn();
      CUDA_CHECK(cudaEventRecord(stop_, 0));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float t = 0;
      CUDA_CHECK(cudaEventElapsedTime(&t, start_, stop_));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

 private:
  void* flush_ = nullptr;
  size_t flush_bytes_;
  cudaEvent_t start_, stop_;
};

struct Row {
  std::string kernel, shape, variant;
  double ms = 0, rate = 0, fraction = 0;  // rate: TFLOP/s or GB/s
  const char* unit = "";
};

// cuDNN's fp32 (FMA math, no TF32) convolution for the same problem. cuDNN's legacy API
// takes symmetric padding only; the downsample's (0, 1) padding is timed as (1, 1), the
// same work.
struct CudnnConv {
  cudnnHandle_t h;
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_bytes = 0;
  void* ws = nullptr;

  CudnnConv(cudnnHandle_t handle, const Conv2dShape& s) : h(handle) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, (int)s.n,
                                           (int)s.c_in, (int)s.h, (int)s.w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, (int)s.n,
                                           (int)s.c_out, (int)s.out_h(), (int)s.out_w()));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, (int)s.c_out,
                                           (int)s.c_in, s.kh, s.kw));
    const int pad = std::max(s.pad_top, s.pad_bottom);
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, pad, pad, s.stride, s.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, CUDNN_FMA_MATH));
    int n = 0;
    cudnnConvolutionFwdAlgoPerf_t fp;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, conv, y, 1, &n, &fp));
    fwd = fp.algo;
    cudnnConvolutionBwdDataAlgoPerf_t dp;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, conv, x, 1, &n, &dp));
    bwd_data = dp.algo;
    cudnnConvolutionBwdFilterAlgoPerf_t wp;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, conv, w, 1, &n, &wp));
    bwd_filter = wp.algo;
    size_t a = 0, b = 0, c = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, x, w, conv, y, fwd, &a));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, w, y, conv, x, bwd_data, &b));
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x, y, conv, w, bwd_filter, &c));
    ws_bytes = std::max({a, b, c});
    if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  }
  ~CudnnConv() {
    cudaFree(ws);
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
};

struct ConvShape {
  const char* name;
  int64_t h, c_in, c_out;
  Conv2dParams p;
};

int run(int argc, char** argv) {
  std::string json_path;
  int64_t batch = 128;
  bool skip_naive = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::stoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--skip-naive")) skip_naive = true;
    else THROW_ERROR("kernel-bench: unknown argument '" << argv[i] << "' (--json FILE, --batch N, --skip-naive)");
  }
  const Peaks peaks = device_peaks();
  std::printf("device: %s  fp32 peak %.1f TFLOP/s  bandwidth %.0f GB/s  L2 %.0f MiB  batch %lld\n",
              peaks.name.c_str(), peaks.fp32_tflops, peaks.bandwidth_gbs, peaks.l2_bytes / 1048576.0,
              static_cast<long long>(batch));
  Timer timer(peaks.l2_bytes);
  std::vector<Row> rows;
  auto add_flops = [&](const std::string& k, const std::string& shape, const std::string& v, double ms,
                       double flops) {
    rows.push_back({k, shape, v, ms, flops / ms / 1e9, flops / ms / 1e9 / peaks.fp32_tflops, "TFLOP/s"});
  };
  auto add_bytes = [&](const std::string& k, const std::string& shape, const std::string& v, double ms,
                       double bytes) {
    rows.push_back({k, shape, v, ms, bytes / ms / 1e6, bytes / ms / 1e6 / peaks.bandwidth_gbs, "GB/s"});
  };

  cudnnHandle_t cudnn;
  CUDNN_CHECK(cudnnCreate(&cudnn));
  const ConvShape convs[] = {
      {"conv_in", 32, 3, 128, Conv2dParams::same(3)},
      {"res 32x32", 32, 128, 128, Conv2dParams::same(3)},
      {"downsample", 32, 128, 128, Conv2dParams::downsample()},
      {"res 16x16 in", 16, 128, 256, Conv2dParams::same(3)},
      {"res 16x16", 16, 256, 256, Conv2dParams::same(3)},
      {"res 8x8", 8, 256, 256, Conv2dParams::same(3)},
      {"res 4x4", 4, 256, 256, Conv2dParams::same(3)},
      {"up 4x4 concat", 4, 512, 256, Conv2dParams::same(3)},
      {"up 16x16 concat", 16, 384, 256, Conv2dParams::same(3)},
      {"up 32x32 concat", 32, 384, 128, Conv2dParams::same(3)},
      {"conv_out", 32, 128, 3, Conv2dParams::same(3)},
  };
  for (const ConvShape& c : convs) {
    Conv2dShape s;
    s.n = batch;
    s.h = s.w = c.h;
    s.c_in = c.c_in;
    s.c_out = c.c_out;
    s.stride = c.p.stride;
    s.pad_top = c.p.pad_top;
    s.pad_left = c.p.pad_left;
    s.pad_bottom = c.p.pad_bottom;
    s.pad_right = c.p.pad_right;
    const Tensor x = randn(Shape{s.n, s.h, s.w, s.c_in}, 1, 1, Device::CUDA);
    const Tensor w = randn(Shape{3, 3, s.c_in, s.c_out}, 1, 2, Device::CUDA);
    const Tensor y = Tensor::empty(Shape{s.n, s.out_h(), s.out_w(), s.c_out}, DType::F32, Device::CUDA);
    const Tensor dx = Tensor::zeros(x.shape(), DType::F32, Device::CUDA);
    const Tensor dw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
    const double flops = 2.0 * s.n * s.out_h() * s.out_w() * s.c_out * 9 * s.c_in;
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s %lldx%lld %lld->%lld", c.name, (long long)c.h,
                  (long long)c.h, (long long)c.c_in, (long long)c.c_out);
    for (cuda::ConvAlgo algo : {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled}) {
      if (algo == cuda::ConvAlgo::Naive && skip_naive) continue;
      const char* v = algo == cuda::ConvAlgo::Naive ? "v1 naive" : "v2 tiled";
      add_flops("conv2d fwd", shape, v, timer.median_ms([&] {
        cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), nullptr, y.data<float>(), algo);
      }), flops);
      add_flops("conv2d dgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), y.data<float>(),
                              dx.data<float>(), nullptr, nullptr, algo);
      }), flops);
      add_flops("conv2d wgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), y.data<float>(), nullptr,
                              dw.data<float>(), nullptr, algo);
      }), flops);
    }
    CudnnConv cd(cudnn, s);
    const float one = 1.0f, zero = 0.0f;
    add_flops("conv2d fwd", shape, "cuDNN fp32", timer.median_ms([&] {
      CUDNN_CHECK(cudnnConvolutionForward(cudnn, &one, cd.x, x.raw(), cd.w, w.raw(), cd.conv, cd.fwd,
                                          cd.ws, cd.ws_bytes, &zero, cd.y, y.raw()));
    }), flops);
    add_flops("conv2d dgrad", shape, "cuDNN fp32", timer.median_ms([&] {
      CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn, &one, cd.w, w.raw(), cd.y, y.raw(), cd.conv,
                                               cd.bwd_data, cd.ws, cd.ws_bytes, &zero, cd.x, dx.raw()));
    }), flops);
    add_flops("conv2d wgrad", shape, "cuDNN fp32", timer.median_ms([&] {
      CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn, &one, cd.x, x.raw(), cd.y, y.raw(), cd.conv,
                                                 cd.bwd_filter, cd.ws, cd.ws_bytes, &zero, cd.w, dw.raw()));
    }), flops);
  }
  CUDNN_CHECK(cudnnDestroy(cudnn));

  // Memory-bound kernels: group norm (read x, write y: 8 bytes/element forward; backward
  // reads x, dy, writes dx: 12), SiLU (8 forward), upsample (4 in + 16 out per input value).
  const struct {
    int64_t h, c;
  } maps[] = {{32, 128}, {16, 256}, {8, 256}, {32, 384}};
  for (const auto& m : maps) {
    const int64_t n = batch * m.h * m.h * m.c;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)m.h, (long long)m.h, (long long)m.c);
    const Tensor x = randn(Shape{batch, m.h, m.h, m.c}, 1, 3, Device::CUDA);
    const Tensor y = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
    const Tensor g = Tensor::full(Shape{m.c}, 1.0, DType::F32, Device::CUDA);
    const Tensor mean = Tensor::empty(Shape{batch, 32}, DType::F32, Device::CUDA);
    const Tensor rstd = Tensor::empty(Shape{batch, 32}, DType::F32, Device::CUDA);
    GroupNormShape gs;
    gs.n = batch;
    gs.s = m.h * m.h;
    gs.c = m.c;
    add_bytes("group_norm fwd", shape, "block per group", timer.median_ms([&] {
      cuda::group_norm_forward(gs, x.data<float>(), g.data<float>(), g.data<float>(), y.data<float>(),
                               mean.data<float>(), rstd.data<float>());
    }), 8.0 * n);
    add_bytes("group_norm bwd (dx)", shape, "block per group", timer.median_ms([&] {
      cuda::group_norm_backward(gs, x.data<float>(), g.data<float>(), mean.data<float>(),
                                rstd.data<float>(), y.data<float>(), y.data<float>(), nullptr, nullptr);
    }), 12.0 * n);
    add_bytes("silu fwd", shape, "grid-stride", timer.median_ms([&] {
      cuda::silu_forward(n, x.data<float>(), y.data<float>());
    }), 8.0 * n);
  }
  {
    const Tensor x = randn(Shape{batch, 16, 16, 256}, 1, 4, Device::CUDA);
    const Tensor y = Tensor::empty(Shape{batch, 32, 32, 256}, DType::F32, Device::CUDA);
    add_bytes("upsample 2x fwd", "16x16x256", "thread per output", timer.median_ms([&] {
      cuda::upsample_nearest2x_forward(UpsampleShape{batch, 16, 16, 256}, x.data<float>(), y.data<float>());
    }), 20.0 * x.numel());
  }

  std::printf("\n%-20s %-30s %-16s %10s %12s %8s\n", "kernel", "shape", "variant", "ms", "rate", "peak");
  nlohmann::json out = {{"device", peaks.name}, {"fp32_peak_tflops", peaks.fp32_tflops},
                        {"bandwidth_peak_gbs", peaks.bandwidth_gbs}, {"batch", batch},
                        {"rows", nlohmann::json::array()}};
  for (const Row& r : rows) {
    std::printf("%-20s %-30s %-16s %10.3f %8.2f %-7s %5.1f%%\n", r.kernel.c_str(), r.shape.c_str(),
                r.variant.c_str(), r.ms, r.rate, r.unit, 100 * r.fraction);
    out["rows"].push_back({{"kernel", r.kernel}, {"shape", r.shape}, {"variant", r.variant},
                           {"ms", r.ms}, {"rate", r.rate}, {"unit", r.unit},
                           {"fraction_of_peak", r.fraction}});
  }
  if (!json_path.empty()) write_file_atomic(json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace
}  // namespace ddpm::bench
#endif

int main(int argc, char** argv) {
  if (!ddpm::cuda_available()) {
    std::printf("kernel-bench: no GPU to measure (%s); nothing to do\n",
                ddpm::cuda_unavailable_reason().c_str());
    return 0;
  }
#if DDPM_WITH_CUDA
  try {
    return ddpm::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel-bench: error: %s\n", e.what());
    return 1;
  }
#else
  (void)argc;
  (void)argv;
  return 0;
#endif
}
