// kernel-bench conv: the four convolution versions at the CIFAR-10 model's 11 conv shapes,
// forward / dgrad / wgrad, next to cuDNN in fp32 (FMA math), with TF32 tensor cores allowed,
// and in bf16 (bf16 tensors, fp32 accumulation), in TFLOP/s. v4 is timed as the engine runs
// it on fp32 tensors: its conversions of the operands to bf16 are inside the time, while
// cuDNN bf16 is given bf16 tensors (what an end-to-end bf16 engine would hand it); and again
// on bf16 activations, as `activations: bf16` runs it (only the weights converted), beside
// the engine's cuDNN path on the same tensors. Then the upsampling layers two ways
// (upsample_conv_bench.cpp).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <cudnn.h>

#include "apps/bench/bench.h"
#include "engine/cuda_check.h"
#include "engine/cudnn_check.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/conv2d_thin.cuh"
#include "kernels/cuda/conv2d_tf32.cuh"
#include "kernels/cuda/gemm_sm90.cuh"

namespace ddpm::bench {

namespace {

// cuDNN's heuristics fill in up to the requested number of algorithms and give each a
// status: an empty answer or a failed status must stop the benchmark, not time garbage.
template <class Perf>
void check_heuristic(int returned, const Perf& perf, const char* pass) {
  CHECK(returned >= 1, "cuDNN returned no " << pass << " algorithm");
  CHECK(perf.status == CUDNN_STATUS_SUCCESS,
        "cuDNN's " << pass << " algorithm: " << cudnnGetErrorString(perf.status));
}

// cuDNN's convolution for the same problem, in the given math mode. cuDNN's legacy API
// pads symmetrically; an asymmetric padding (the TF-'SAME' downsample: 0 rows before, 1
// after) is the symmetric part as padding and the rest as rows/columns of the input: cuDNN
// then convolves an input of in_h x in_w (the caller's x padded at the bottom/right, pad
// copy not timed), the same output and the same multiply-adds as ours.
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
  int64_t in_h = 0, in_w = 0;  // the input cuDNN convolves (padded when asymmetric)

  CudnnConv(cudnnHandle_t handle, const Conv2dShape& s, cudnnMathType_t math,
            cudnnDataType_t data) : h(handle) {
    const int pad_h = std::min(s.pad_top, s.pad_bottom), pad_w = std::min(s.pad_left, s.pad_right);
    in_h = s.h + s.pad_top + s.pad_bottom - 2 * pad_h;
    in_w = s.w + s.pad_left + s.pad_right - 2 * pad_w;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, data, (int)s.n,
                                           (int)s.c_in, (int)in_h, (int)in_w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, data, (int)s.n,
                                           (int)s.c_out, (int)s.out_h(), (int)s.out_w()));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, data, CUDNN_TENSOR_NHWC, (int)s.c_out,
                                           (int)s.c_in, s.kh, s.kw));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, pad_h, pad_w, s.stride, s.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math));
    int n = 0;
    cudnnConvolutionFwdAlgoPerf_t fp;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, conv, y, 1, &n, &fp));
    check_heuristic(n, fp, "forward");
    fwd = fp.algo;
    cudnnConvolutionBwdDataAlgoPerf_t dp;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, conv, x, 1, &n, &dp));
    check_heuristic(n, dp, "backward-data");
    bwd_data = dp.algo;
    cudnnConvolutionBwdFilterAlgoPerf_t wp;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, conv, w, 1, &n, &wp));
    check_heuristic(n, wp, "backward-filter");
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

// One pass of cuDNN's at its fastest: every algorithm its heuristics rank (rank(count,
// &returned, perf), the pass's v7 query) that can run within the engine's benchmark cap,
// deterministic or not, as torch.backends.cudnn.benchmark chooses by default, each timed
// (run(algo, workspace, bytes) makes the call) by a short search (the median of 5 runs
// after 1: fp32's slower algorithms take milliseconds a run), printed, "  SHAPE: NAME PASS:
// algo 1 0.0780 ms, algo 0 (non-deterministic) 0.0700 ms -> algo 0", then the fastest timed
// as every row is; its time returned (-1 when none ran).
template <class Perf, class Rank, class Run>
double fastest_algorithm(Timer& timer, const char* shape, const char* name, const char* pass,
                         Rank rank, Run run) {
  Perf perf[8];  // every algorithm of a pass (cuDNN 9: at most 8)
  int n = 0;
  CUDNN_CHECK(rank(8, &n, perf));
  double best = -1.0;
  int best_algo = -1, best_at = -1;
  Tensor best_ws;  // the fastest's workspace, kept for its row
  const char* sep = "";  // before every entry but the first
  std::printf("  %s: %s %s:", shape, name, pass);
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > cuda::kCudnnBenchmarkWorkspaceCap) continue;
    const Tensor ws = p.memory ? Tensor::empty(Shape{static_cast<int64_t>((p.memory + 3) / 4)},
                                               DType::F32, Device::CUDA)
                               : Tensor();
    void* const wsp = ws.defined() ? ws.raw() : nullptr;
    const int algo = static_cast<int>(p.algo);
    const cudnnStatus_t status = run(p.algo, wsp, p.memory);  // once, untimed: can it run?
    if (status != CUDNN_STATUS_SUCCESS) {
      std::printf("%s algo %d refused (%s)", sep, algo, cudnnGetErrorString(status));
      sep = ",";
      continue;
    }
    const double ms = timer.median_ms([&] { CUDNN_CHECK(run(p.algo, wsp, p.memory)); }, 1, 5);
    std::printf("%s algo %d%s %.4f ms", sep, algo,
                p.determinism == CUDNN_DETERMINISTIC ? "" : " (non-deterministic)", ms);
    sep = ",";
    if (best < 0 || ms < best) {
      best = ms;
      best_algo = algo;
      best_at = i;
      best_ws = ws;
    }
  }
  std::printf(" -> algo %d\n", best_algo);
  if (best_at < 0) return -1.0;
  const Perf& p = perf[best_at];
  void* const wsp = best_ws.defined() ? best_ws.raw() : nullptr;
  return timer.median_ms([&] { CUDNN_CHECK(run(p.algo, wsp, p.memory)); });
}

struct ConvShape {
  const char* name;
  int64_t h, c_in, c_out;
  Conv2dParams p;
};

}  // namespace

void bench_convolutions(const Options& o, Timer& timer, Report& report) {
  const int64_t batch = o.batch;
  const bool skip_naive = o.skip_naive;
  auto add_flops = [&](const std::string& k, const std::string& shape, const std::string& v,
                       double ms, double flops) { report.add_flops(k, shape, v, ms, flops); };
  // v4's and v5's rows time the GEMMs on every shape, the few-output ones too, which the
  // engine hands to the direct kernels (their rows below); the setting as it was again when
  // the section ends, however it ends (a failed section does not end the run)
  const cuda::ThinConvolutions gemm_rows(false);
  cudnnHandle_t cudnn;
  CUDNN_CHECK(cudnnCreate(&cudnn));
  // --smoke: the same kinds of layer (3 input channels, a downsample's asymmetric padding,
  // 3 output channels) at shapes the CPU emulation runs in seconds
  const std::vector<ConvShape> smoke = {
      {"smoke conv_in", 8, 3, 16, Conv2dParams::same(3)},
      {"smoke downsample", 8, 16, 16, Conv2dParams::downsample()},
      {"smoke conv_out", 8, 16, 3, Conv2dParams::same(3)},
  };
  const std::vector<ConvShape> cifar10 = {
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
  for (const ConvShape& c : o.smoke ? smoke : cifar10) {
    const Conv2dShape s =
        conv2d_shape(Shape{batch, c.h, c.h, c.c_in}, Shape{3, 3, c.c_in, c.c_out}, c.p);
    const Tensor x = randn(Shape{s.n, s.h, s.w, s.c_in}, 1, 1, Device::CUDA);
    const Tensor w = randn(Shape{3, 3, s.c_in, s.c_out}, 1, 2, Device::CUDA);
    const Tensor y = Tensor::empty(Shape{s.n, s.out_h(), s.out_w(), s.c_out}, DType::F32, Device::CUDA);
    const Tensor dx = Tensor::zeros(x.shape(), DType::F32, Device::CUDA);
    const Tensor dw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
    const double flops = 2.0 * s.n * s.out_h() * s.out_w() * s.c_out * 9 * s.c_in;
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s %lldx%lld %lld->%lld", c.name, (long long)c.h,
                  (long long)c.h, (long long)c.c_in, (long long)c.c_out);
    // the layer's rows by name for a profiler: "conv res 32x32 32x32 128->128" (kernel-bench
    // --once; scripts/gpu-check.sh's profile stage)
    const ProfileRange layer_range(("conv " + std::string(shape)).c_str());
    // v4 once per block shape (what the autotuner chooses between)
    struct Version {
      cuda::ConvAlgo algo;
      cuda::Bf16Tiles tiles;
      const char* name;
      bool tf32_mma = true;  // v4 TF32: TF32 products where they run (else bf16 pieces)
      cuda::TiledTiles tiled = cuda::TiledTiles::Heuristic;  // v2's block tile
      bool tiled_runs = true;  // v2 stages its tiles in 16-byte runs where the shape allows
    };
    const Version versions[] = {
        {cuda::ConvAlgo::Naive, cuda::Bf16Tiles::Heuristic, "v1 naive"},
        // v2 on 64x64 tiles, 4x4 outputs a thread (its first form), on 128x128 tiles of 8x8,
        // and as the engine runs it: the large tiles where they fill the GPU twice
        // (conv2d.cu), which the two rows before it check at every shape; the same bits
        {cuda::ConvAlgo::Tiled, cuda::Bf16Tiles::Heuristic, "v2 tiled (64x64 tiles)", true,
         cuda::TiledTiles::Small},
        {cuda::ConvAlgo::Tiled, cuda::Bf16Tiles::Heuristic, "v2 tiled (128x128 tiles)", true,
         cuda::TiledTiles::Large},
        {cuda::ConvAlgo::Tiled, cuda::Bf16Tiles::Heuristic, "v2 tiled"},
        // and as it ran before its runs: every element of a tile gathered on its own
        {cuda::ConvAlgo::Tiled, cuda::Bf16Tiles::Heuristic, "v2 tiled, element by element",
         true, cuda::TiledTiles::Heuristic, false},
        {cuda::ConvAlgo::TensorCore, cuda::Bf16Tiles::Heuristic, "v3 TF32 tensor cores"},
        // precision tf32's default, v4's GEMM in TF32 (conv2d_tf32.cu): TF32 mma.sync on
        // the fp32 operands in the forward and the dgrad, bf16 pieces in the wgrad
        {cuda::ConvAlgo::Tf32TensorCore, cuda::Bf16Tiles::Heuristic, "v4 TF32"},
        {cuda::ConvAlgo::Tf32TensorCore, cuda::Bf16Tiles::Heuristic,
         "v4 TF32, every pass on bf16 pieces", false},
        // fp32 on v4's GEMM (conv2d_pieces.cu, cuda_conv: bf16x6): each operand three bf16
        // pieces, six of their products; against v2 and cuDNN fp32, which give its numbers
        {cuda::ConvAlgo::Bf16x6TensorCore, cuda::Bf16Tiles::Heuristic, "v4 fp32 on bf16x6"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Large, "v4 bf16 (128x128 tiles)"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Deep,
         "v4 bf16 (128x128 tiles, 4 stages)"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Small, "v4 bf16 (64x64 tiles)"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::WideWarps,
         "v4 bf16 (128x128 tiles, 64x64 warps)"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Tall,
         "v4 bf16 (256x128 tiles, 64x64 warps)"},
        // cuda_conv: cudnn, as the engine runs it: cuDNN plus the glue of conv2d_cudnn.cu
        // (weight transposition, padding and bf16 staging), next to cuDNN alone below
        {cuda::ConvAlgo::CudnnBf16, cuda::Bf16Tiles::Heuristic, "engine on cuDNN bf16 (+ glue)"}};
    for (const Version& version : versions) {
      if (!o.wants(false)) break;
      const cuda::ConvAlgo algo = version.algo;
      const char* v = version.name;
      if (algo == cuda::ConvAlgo::Naive && skip_naive) continue;
      if (algo == cuda::ConvAlgo::CudnnBf16 &&
          !cuda::conv2d_cudnn_supported(s, cuda::CudnnMath::Bf16)) {
        std::printf("  %s: %s skipped: cuDNN has no algorithm (v4 would run instead)\n", shape, v);
        continue;
      }
      cuda::set_conv2d_bf16_tiles(version.tiles);
      cuda::set_conv2d_tf32_mma(version.tf32_mma);
      cuda::set_conv2d_tiled_tiles(version.tiled);
      cuda::set_conv2d_tiled_runs(version.tiled_runs);
      // the engine's path: workspaces for v4's bf16 operands and for split-K (cuDNN: its
      // staged operands and its own)
      const int64_t ws_floats = std::max(cuda::conv2d_forward_workspace(s, algo),
                                         cuda::conv2d_backward_workspace(s, algo));
      const Tensor ws = ws_floats ? Tensor::empty(Shape{ws_floats}, DType::F32, Device::CUDA) : Tensor();
      float* const wsp = ws.defined() ? ws.data<float>() : nullptr;
      add_flops("conv2d fwd", shape, v, timer.median_ms([&] {
        cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), nullptr, y.data<float>(), algo,
                             wsp);
      }), flops);
      // dgrad without a workspace where the version can (v1-v3 use it for the wgrad only)
      add_flops("conv2d dgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), y.data<float>(),
                              dx.data<float>(), nullptr, nullptr, algo,
                              cuda::conv2d_dgrad_uses_workspace(algo) ? wsp : nullptr);
      }), flops);
      add_flops("conv2d wgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), y.data<float>(), nullptr,
                              dw.data<float>(), nullptr, algo, wsp);
      }), flops);
    }
    cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
    cuda::set_conv2d_tf32_mma(true);
    cuda::set_conv2d_tiled_tiles(cuda::TiledTiles::Heuristic);
    cuda::set_conv2d_tiled_runs(true);
    // cuDNN in plain fp32 (FMA math: the comparison for v1/v2) and allowed TF32 tensor
    // cores (CUDNN_TENSOR_OP_MATH: the comparison for v3, and PyTorch's default for fp32)
    // and bf16 tensors with tensor cores (the comparison for v4, and PyTorch's autocast)
    const Tensor x16 = x.to(Device::CPU).to(DType::BF16).to(Device::CUDA);
    const Tensor w16 = w.to(Device::CPU).to(DType::BF16).to(Device::CUDA);
    const Tensor y16 = y.to(Device::CPU).to(DType::BF16).to(Device::CUDA);
    const Tensor dx16 = Tensor::zeros(x.shape(), DType::BF16, Device::CUDA);
    const Tensor dw16 = Tensor::zeros(w.shape(), DType::BF16, Device::CUDA);
    // On bf16 activations (activations: bf16): v4 and the engine's cuDNN path given bf16 x,
    // y and dy as they are, as cuDNN bf16 alone is below; the weights either converted inside
    // the time (and, for cuDNN, transposed; a padded x staged) or, as training and sampling
    // in bf16 run them, read from the weights' bf16 copy (w16 here; v4 reads it in place
    // where both channel counts are multiples of 8): that row is v4 against cuDNN alone.
    // v4 with the heuristic's block shape, with 128x128 tiles of 64x64 warps (the shape
    // that reads the least shared memory per mma: conv2d_bf16.cu), and with 256x128 tiles of
    // them (the weights read from L2 once per 256 rows)
    // The direct kernels for few output channels (conv2d_thin.cu; the U-Net's last layer),
    // as the engine runs them by default, where they take the shape. And v4 with its
    // gathers in L2 only (cp.async.cg), where the engine has them go through L1 too (.ca:
    // conv2d_bf16.cuh, set_conv2d_bf16_gathers_through_l1), in all three passes.
    struct OnBf16 {
      cuda::ConvAlgo algo;
      cuda::Bf16Tiles tiles;
      bool weight_copy;
      const char* name;
      bool direct = false;
      bool gathers_through_l1 = true;
    };
    const cuda::Bf16Tiles heuristic = cuda::Bf16Tiles::Heuristic;
    const OnBf16 on_bf16[] = {
        {cuda::ConvAlgo::Bf16TensorCore, heuristic, false, "v4 bf16, bf16 activations"},
        {cuda::ConvAlgo::Bf16TensorCore, heuristic, true,
         "v4 bf16, bf16 activations and weight copy"},
        {cuda::ConvAlgo::Bf16TensorCore, heuristic, false,
         "v4 bf16, gathers in L2 only, bf16 activations", false, false},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::WideWarps, false,
         "v4 bf16 (64x64 warps), bf16 activations"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::WideWarps, true,
         "v4 bf16 (64x64 warps), bf16 activations and weight copy"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Tall, false,
         "v4 bf16 (256x128 tiles), bf16 activations"},
        {cuda::ConvAlgo::Bf16TensorCore, cuda::Bf16Tiles::Tall, true,
         "v4 bf16 (256x128 tiles), bf16 activations and weight copy"},
        {cuda::ConvAlgo::Bf16TensorCore, heuristic, false,
         "direct (few outputs), bf16 activations", true},
        {cuda::ConvAlgo::Bf16TensorCore, heuristic, true,
         "direct (few outputs), bf16 activations and weight copy", true},
        {cuda::ConvAlgo::CudnnBf16, heuristic, false,
         "engine on cuDNN bf16, bf16 activations (+ glue)"},
        {cuda::ConvAlgo::CudnnBf16, heuristic, true,
         "engine on cuDNN bf16, bf16 activations and weight copy (+ glue)"}};
    for (const OnBf16& run : on_bf16) {
      if (!o.wants(false)) break;
      const cuda::ConvAlgo algo = run.algo;
      const bool weight_copy = run.weight_copy;
      const char* v = run.name;
      if (!cuda::conv2d_algo_runs(s, algo)) continue;  // said above
      if (run.direct && !cuda::conv2d_thin_applies(s)) continue;
      cuda::set_conv2d_bf16_thin(run.direct);
      cuda::set_conv2d_bf16_tiles(run.tiles);
      const cuda::GathersThroughL1 gathers(run.gathers_through_l1);
      const uint16_t* w_bf16 = weight_copy ? bf16_bits(w16) : nullptr;
      const int64_t ws_floats = std::max(cuda::conv2d_forward_workspace(s, algo),
                                         cuda::conv2d_backward_workspace(s, algo));
      const Tensor ws = Tensor::empty(Shape{std::max<int64_t>(1, ws_floats)}, DType::F32,
                                      Device::CUDA);
      add_flops("conv2d fwd", shape, v, timer.median_ms([&] {
        cuda::conv2d_forward(s, bf16_bits(x16), w.data<float>(), nullptr, bf16_bits(y16), algo,
                             ws.data<float>(), nullptr, nullptr, w_bf16);
      }), flops);
      add_flops("conv2d dgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, bf16_bits(x16), w.data<float>(), bf16_bits(y16),
                              bf16_bits(dx16), nullptr, nullptr, algo, ws.data<float>(), w_bf16);
      }), flops);
      if (weight_copy) continue;  // the wgrad reads no weights: the row without is its time
      add_flops("conv2d wgrad", shape, v, timer.median_ms([&] {
        cuda::conv2d_backward(s, bf16_bits(x16), w.data<float>(), bf16_bits(y16), nullptr,
                              dw.data<float>(), nullptr, algo, ws.data<float>());
      }), flops);
    }
    cuda::set_conv2d_bf16_thin(false);
    cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
    // v5, the three passes on Hopper's wgmma (conv2d_bf16.cuh), where it runs, as v4's rows
    // above
    if (o.wants(true) && cuda::gemm_sm90_available() &&
        cuda::conv2d_algo_runs(s, cuda::ConvAlgo::Bf16TensorCore)) {
      const cuda::ConvAlgo v4 = cuda::ConvAlgo::Bf16TensorCore;
      const Tensor ws = Tensor::empty(
          Shape{std::max<int64_t>(1, std::max(cuda::conv2d_forward_workspace(s, v4),
                                              cuda::conv2d_backward_workspace(s, v4)))},
          DType::F32, Device::CUDA);
      auto forward = [&] {
        cuda::conv2d_forward(s, bf16_bits(x16), w.data<float>(), nullptr, bf16_bits(y16), v4,
                             ws.data<float>(), nullptr, nullptr, bf16_bits(w16));
      };
      auto dgrad = [&] {
        cuda::conv2d_backward(s, bf16_bits(x16), w.data<float>(), bf16_bits(y16),
                              bf16_bits(dx16), nullptr, nullptr, v4, ws.data<float>(),
                              bf16_bits(w16));
      };
      auto wgrad = [&] {
        cuda::conv2d_backward(s, bf16_bits(x16), w.data<float>(), bf16_bits(y16), nullptr,
                              dw.data<float>(), nullptr, v4, ws.data<float>());
      };
      cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Wgmma);
      add_flops("conv2d fwd", shape, "v5 wgmma, bf16 activations and weight copy",
                timer.median_ms(forward), flops);
      add_flops("conv2d dgrad", shape, "v5 wgmma, bf16 activations and weight copy",
                timer.median_ms(dgrad), flops);
      {  // the gathers in L2 only, as v4's row above
        const cuda::GathersThroughL1 in_l2_only(false);
        const char* l2 = "v5 wgmma, gathers in L2 only, bf16 activations and weight copy";
        add_flops("conv2d fwd", shape, l2, timer.median_ms(forward), flops);
        add_flops("conv2d dgrad", shape, l2, timer.median_ms(dgrad), flops);
        add_flops("conv2d wgrad", shape, "v5 wgmma, gathers in L2 only, bf16 activations",
                  timer.median_ms(wgrad), flops);
      }
      add_flops("conv2d wgrad", shape, "v5 wgmma, bf16 activations", timer.median_ms(wgrad),
                flops);
      // B by the copy engine (TMA): the forward's weights, the wgrad's dy, and the dgrad's
      // weights per tap where Cout, padded to 8, is a multiple of 64 (elsewhere the dgrad
      // runs as above: no row)
      cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::WgmmaTma);
      add_flops("conv2d fwd", shape, "v5 wgmma, TMA B, bf16 activations and weight copy",
                timer.median_ms(forward), flops);
      if ((s.c_out + 7) / 8 * 8 % 64 == 0)
        add_flops("conv2d dgrad", shape, "v5 wgmma, TMA B, bf16 activations and weight copy",
                  timer.median_ms(dgrad), flops);
      add_flops("conv2d wgrad", shape, "v5 wgmma, TMA B, bf16 activations",
                timer.median_ms(wgrad), flops);
      // and the gathered A by the copy engine's im2col mode (no thread gathers or copies)
      // where the pass allows it: stride 1 and Cin a multiple of 64 after padding to 8 in the
      // forward and the wgrad (x's window both), Cout so in the dgrad (whose strided phases
      // take it where their corners agree), the model's padding; elsewhere it runs as the
      // rows above: no row. Warp-specialised (the default where the copy engine brings
      // both operands), and in the plain loop of the rows above
      cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::WgmmaIm2col);
      const bool x_window = s.stride == 1 && (s.c_in + 7) / 8 * 8 % 64 == 0;
      const bool dy_window = (s.c_out + 7) / 8 * 8 % 64 == 0;
      for (const bool warp_specialised : {true, false}) {
        const cuda::WarpSpecialisedV5 schedule(warp_specialised);
        const char* with_copy =
            warp_specialised
                ? "v5 wgmma, TMA B, im2col A, bf16 activations and weight copy"
                : "v5 wgmma, TMA B, im2col A, plain loop, bf16 activations and weight copy";
        const char* wgrad_name = warp_specialised
                                     ? "v5 wgmma, TMA B, im2col A, bf16 activations"
                                     : "v5 wgmma, TMA B, im2col A, plain loop, bf16 activations";
        if (x_window) add_flops("conv2d fwd", shape, with_copy, timer.median_ms(forward), flops);
        if (dy_window) add_flops("conv2d dgrad", shape, with_copy, timer.median_ms(dgrad), flops);
        if (x_window) add_flops("conv2d wgrad", shape, wgrad_name, timer.median_ms(wgrad), flops);
      }
      // v5's schedules that run all three passes: forward and dgrad on the weights' copy,
      // the wgrad (which reads no weights)
      auto three_passes = [&](cuda::Bf16Tiles tiles, const char* with_copy,
                              const char* wgrad_name) {
        cuda::set_conv2d_bf16_tiles(tiles);
        add_flops("conv2d fwd", shape, with_copy, timer.median_ms(forward), flops);
        add_flops("conv2d dgrad", shape, with_copy, timer.median_ms(dgrad), flops);
        add_flops("conv2d wgrad", shape, wgrad_name, timer.median_ms(wgrad), flops);
      };
      // in a ring of 3 stages, two blocks an SM (one's prologue and epilogue behind the
      // other's products)
      three_passes(cuda::Bf16Tiles::WgmmaPaired,
                   "v5 wgmma, 2 blocks an SM, bf16 activations and weight copy",
                   "v5 wgmma, 2 blocks an SM, bf16 activations");
      // on 256x128 tiles (each warpgroup two sub-tiles of 64 rows): B from L2 once per 256
      // rows
      three_passes(cuda::Bf16Tiles::WgmmaTall,
                   "v5 wgmma, 256x128 tiles, bf16 activations and weight copy",
                   "v5 wgmma, 256x128 tiles, bf16 activations");
      cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
    }
    struct Baseline {
      cudnnMathType_t math;
      cudnnDataType_t data;
      const char* name;
      const char* fastest;  // its rows with every algorithm timed
    };
    for (const Baseline& base :
         {Baseline{CUDNN_FMA_MATH, CUDNN_DATA_FLOAT, "cuDNN fp32", "cuDNN fp32, fastest algorithm"},
          Baseline{CUDNN_TENSOR_OP_MATH, CUDNN_DATA_FLOAT, "cuDNN TF32",
                   "cuDNN TF32, fastest algorithm"},
          Baseline{CUDNN_TENSOR_OP_MATH, CUDNN_DATA_BFLOAT16, "cuDNN bf16",
                   "cuDNN bf16, fastest algorithm"}}) {
      if (!o.wants(false)) break;
      const char* name = base.name;
      const bool bf16 = base.data == CUDNN_DATA_BFLOAT16;
      const DType dt = bf16 ? DType::BF16 : DType::F32;
      std::unique_ptr<CudnnConv> made;
      try {  // cuDNN may have no bf16 algorithm for a shape (3 channels): say so, go on
        made = std::make_unique<CudnnConv>(cudnn, s, base.math, base.data);
      } catch (const Error& e) {
        std::printf("  %s: %s skipped: %s\n", shape, name, e.what());
        continue;
      }
      const CudnnConv& cd = *made;
      const bool padded = cd.in_h != s.h || cd.in_w != s.w;
      const Tensor xc = padded ? Tensor::zeros(Shape{s.n, cd.in_h, cd.in_w, s.c_in}, dt, Device::CUDA)
                               : (bf16 ? x16 : x);
      const Tensor dxc = padded ? Tensor::zeros(xc.shape(), dt, Device::CUDA) : (bf16 ? dx16 : dx);
      const Tensor& wc = bf16 ? w16 : w;
      const Tensor& yc = bf16 ? y16 : y;
      const Tensor& dwc = bf16 ? dw16 : dw;
      const float one = 1.0f, zero = 0.0f;
      add_flops("conv2d fwd", shape, name, timer.median_ms([&] {
        CUDNN_CHECK(cudnnConvolutionForward(cudnn, &one, cd.x, xc.raw(), cd.w, wc.raw(), cd.conv,
                                            cd.fwd, cd.ws, cd.ws_bytes, &zero, cd.y, yc.raw()));
      }), flops);
      add_flops("conv2d dgrad", shape, name, timer.median_ms([&] {
        CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn, &one, cd.w, wc.raw(), cd.y, yc.raw(),
                                                 cd.conv, cd.bwd_data, cd.ws, cd.ws_bytes, &zero,
                                                 cd.x, dxc.raw()));
      }), flops);
      add_flops("conv2d wgrad", shape, name, timer.median_ms([&] {
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn, &one, cd.x, xc.raw(), cd.y, yc.raw(),
                                                   cd.conv, cd.bwd_filter, cd.ws, cd.ws_bytes,
                                                   &zero, cd.w, dwc.raw()));
      }), flops);
      // and at its fastest: every algorithm timed, the heuristics' pick above among them
      // (PyTorch's torch.backends.cudnn.benchmark = True, the comparison its users see; in
      // fp32 perhaps Winograd's or FFT's transforms, which multiply less)
      const auto add_best = [&](const char* kernel, double ms) {
        if (ms >= 0) add_flops(kernel, shape, base.fastest, ms, flops);
      };
      add_best("conv2d fwd", fastest_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
          timer, shape, name, "forward",
          [&](int count, int* n, cudnnConvolutionFwdAlgoPerf_t* perf) {
            return cudnnGetConvolutionForwardAlgorithm_v7(cudnn, cd.x, cd.w, cd.conv, cd.y,
                                                          count, n, perf);
          },
          [&](cudnnConvolutionFwdAlgo_t a, void* ws, size_t bytes) {
            return cudnnConvolutionForward(cudnn, &one, cd.x, xc.raw(), cd.w, wc.raw(), cd.conv,
                                           a, ws, bytes, &zero, cd.y, yc.raw());
          }));
      add_best("conv2d dgrad", fastest_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
          timer, shape, name, "dgrad",
          [&](int count, int* n, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
            return cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn, cd.w, cd.y, cd.conv, cd.x,
                                                               count, n, perf);
          },
          [&](cudnnConvolutionBwdDataAlgo_t a, void* ws, size_t bytes) {
            return cudnnConvolutionBackwardData(cudnn, &one, cd.w, wc.raw(), cd.y, yc.raw(),
                                                cd.conv, a, ws, bytes, &zero, cd.x, dxc.raw());
          }));
      add_best("conv2d wgrad", fastest_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
          timer, shape, name, "wgrad",
          [&](int count, int* n, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
            return cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn, cd.x, cd.y, cd.conv,
                                                                 cd.w, count, n, perf);
          },
          [&](cudnnConvolutionBwdFilterAlgo_t a, void* ws, size_t bytes) {
            return cudnnConvolutionBackwardFilter(cudnn, &one, cd.x, xc.raw(), cd.y, yc.raw(),
                                                  cd.conv, a, ws, bytes, &zero, cd.w, dwc.raw());
          }));
    }
  }
  CUDNN_CHECK(cudnnDestroy(cudnn));
  if (o.wants(false)) bench_upsample_convolutions(o, timer, report);
}

}  // namespace ddpm::bench
