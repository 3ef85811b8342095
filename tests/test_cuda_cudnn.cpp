// Our CUDA convolutions against cuDNN (fp32 FMA math, no TF32) on the same data: forward,
// dgrad and wgrad, both kernel versions. cuDNN's filter layout for NHWC is (Cout, KH, KW,
// Cin); ours is (KH, KW, Cin, Cout), so the test transposes the weight (and the weight
// gradient back). cuDNN's legacy API pads symmetrically: for the TF-'SAME' downsample (0
// rows/columns before, 1 after) cuDNN gets the input with that row and column of zeros
// appended and no padding, the same convolution (and its input gradient is cropped back).
// cuDNN's algorithm heuristics must return an algorithm with a success status, or the
// comparison would run an uninitialised choice. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_check.h"
#include "engine/cudnn_check.h"
#include "kernels/cuda/conv2d.cuh"
#endif

namespace ddpm {
namespace {

#if DDPM_WITH_CUDA
// (KH, KW, Cin, Cout) <-> (Cout, KH, KW, Cin) on the host.
std::vector<float> to_krsc(const std::vector<float>& w, int k, int64_t ci, int64_t co) {
  std::vector<float> out(w.size());
  for (int64_t t = 0; t < k * k; ++t)
    for (int64_t i = 0; i < ci; ++i)
      for (int64_t o = 0; o < co; ++o) out[(o * k * k + t) * ci + i] = w[(t * ci + i) * co + o];
  return out;
}

struct CudnnCase {
  int64_t n, h, c_in, c_out;
  int k, stride, pad_before, pad_after;
};

// x (N, H, W, C) with `extra` rows and columns of zeros appended at the bottom and right.
std::vector<float> pad_after(const std::vector<float>& x, int64_t n, int64_t h, int64_t c,
                             int64_t extra) {
  const int64_t hp = h + extra;
  std::vector<float> out(n * hp * hp * c, 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x0 = 0; x0 < h; ++x0)
        for (int64_t ch = 0; ch < c; ++ch)
          out[((i * hp + y) * hp + x0) * c + ch] = x[((i * h + y) * h + x0) * c + ch];
  return out;
}

// The inverse: the top-left H x W of each (H + extra)^2 image.
std::vector<float> crop(const std::vector<float>& x, int64_t n, int64_t h, int64_t c, int64_t extra) {
  const int64_t hp = h + extra;
  std::vector<float> out(n * h * h * c);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x0 = 0; x0 < h; ++x0)
        for (int64_t ch = 0; ch < c; ++ch)
          out[((i * h + y) * h + x0) * c + ch] = x[((i * hp + y) * hp + x0) * c + ch];
  return out;
}

// Sums over up to K = 9*256 terms in different orders: bounds as in test_cuda_ops.cpp.
void expect_close(const std::vector<float>& ours, const std::vector<float>& ref, const char* what) {
  test::expect_close(ours, ref, 2e-4, 2e-4, what, "ours", "cuDNN");
}

TEST(CudaCudnn, ConvolutionsMatchCudnn) {
  REQUIRE_GPU();
  const CudnnCase cases[] = {{3, 9, 65, 67, 3, 1, 1, 1},   {2, 16, 128, 256, 3, 1, 1, 1},
                             {2, 32, 128, 128, 3, 2, 1, 1}, {3, 8, 64, 32, 1, 1, 0, 0},
                             {2, 32, 3, 128, 3, 1, 1, 1},   {2, 32, 128, 128, 3, 2, 0, 1},
                             {3, 9, 17, 19, 3, 2, 0, 1}};
  cudnnHandle_t h;
  CUDNN_CHECK(cudnnCreate(&h));
  uint64_t stream = 1;
  for (const CudnnCase& c : cases) {
    const Conv2dShape s =
        conv2d_shape(Shape{c.n, c.h, c.h, c.c_in}, Shape{c.k, c.k, c.c_in, c.c_out},
                     Conv2dParams{c.stride, c.pad_before, c.pad_before, c.pad_after, c.pad_after});
    const int pad = std::min(c.pad_before, c.pad_after);
    const int64_t extra = c.pad_after - pad, hp = c.h + extra;  // cuDNN's input is hp x hp
    const Tensor x = randn(Shape{s.n, s.h, s.w, s.c_in}, 3, stream++, Device::CUDA);
    const Tensor x_cudnn =
        extra == 0 ? x
                   : Tensor::from_vector(Shape{s.n, hp, hp, s.c_in},
                                         pad_after(x.to_vector<float>(), s.n, s.h, s.c_in, extra),
                                         Device::CUDA);
    const std::vector<float> w_host =
        scale(randn(Shape{c.k, c.k, c.c_in, c.c_out}, 3, stream++), 1.0 / std::sqrt(c.k * c.k * c.c_in))
            .to_vector<float>();
    const Tensor w = Tensor::from_vector(Shape{c.k, c.k, c.c_in, c.c_out}, w_host, Device::CUDA);
    const Tensor w_krsc = Tensor::from_vector(Shape{c.c_out, c.k, c.k, c.c_in},
                                              to_krsc(w_host, c.k, c.c_in, c.c_out), Device::CUDA);
    const Shape ys{s.n, s.out_h(), s.out_w(), s.c_out};
    const Tensor dy = randn(ys, 3, stream++, Device::CUDA);

    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, (int)s.n, (int)s.c_in, (int)hp, (int)hp));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, (int)s.n, (int)s.c_out, (int)ys[1], (int)ys[2]));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, (int)s.c_out, (int)s.c_in, c.k, c.k));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(cd, pad, pad, c.stride, c.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH));
    // cuDNN's own heuristic choice of algorithm for each pass, with its workspace.
    const float one = 1.0f, zero = 0.0f;
    int returned = 0;
    cudnnConvolutionFwdAlgoPerf_t fp;
    cudnnConvolutionBwdDataAlgoPerf_t dp;
    cudnnConvolutionBwdFilterAlgoPerf_t wp;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, 1, &returned, &fp));
    ASSERT_GE(returned, 1) << "cuDNN returned no forward algorithm";
    ASSERT_EQ(fp.status, CUDNN_STATUS_SUCCESS) << cudnnGetErrorString(fp.status);
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wd, yd, cd, xd, 1, &returned, &dp));
    ASSERT_GE(returned, 1) << "cuDNN returned no backward-data algorithm";
    ASSERT_EQ(dp.status, CUDNN_STATUS_SUCCESS) << cudnnGetErrorString(dp.status);
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, xd, yd, cd, wd, 1, &returned, &wp));
    ASSERT_GE(returned, 1) << "cuDNN returned no backward-filter algorithm";
    ASSERT_EQ(wp.status, CUDNN_STATUS_SUCCESS) << cudnnGetErrorString(wp.status);
    size_t a = 0, b = 0, f = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, fp.algo, &a));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, wd, yd, cd, xd, dp.algo, &b));
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, xd, yd, cd, wd, wp.algo, &f));
    const size_t ws_bytes = std::max({a, b, f});
    const Tensor y_ref = Tensor::empty(ys, DType::F32, Device::CUDA);
    const Tensor dx_ref = Tensor::empty(x_cudnn.shape(), DType::F32, Device::CUDA);
    const Tensor dw_ref = Tensor::empty(w_krsc.shape(), DType::F32, Device::CUDA);
    const Tensor ws = Tensor::empty(Shape{static_cast<int64_t>(ws_bytes / 4 + 1)}, DType::F32, Device::CUDA);
    CUDNN_CHECK(cudnnConvolutionForward(h, &one, xd, x_cudnn.raw(), wd, w_krsc.raw(), cd, fp.algo,
                                        ws.raw(), ws_bytes, &zero, yd, y_ref.raw()));
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, wd, w_krsc.raw(), yd, dy.raw(), cd, dp.algo,
                                             ws.raw(), ws_bytes, &zero, xd, dx_ref.raw()));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, xd, x_cudnn.raw(), yd, dy.raw(), cd, wp.algo,
                                               ws.raw(), ws_bytes, &zero, wd, dw_ref.raw()));
    const std::vector<float> dw_ref_ours_layout = [&] {
      const std::vector<float> k = dw_ref.to_vector<float>();
      std::vector<float> out(k.size());
      for (int64_t t = 0; t < c.k * c.k; ++t)
        for (int64_t i = 0; i < c.c_in; ++i)
          for (int64_t o = 0; o < c.c_out; ++o) out[(t * c.c_in + i) * c.c_out + o] = k[(o * c.k * c.k + t) * c.c_in + i];
      return out;
    }();
    for (cuda::ConvAlgo algo : {cuda::ConvAlgo::Naive, cuda::ConvAlgo::Tiled}) {
      SCOPED_TRACE(Shape({c.n, c.h, c.h, c.c_in}).str() + " k" + std::to_string(c.k) + " s" +
                   std::to_string(c.stride) + " pad " + std::to_string(c.pad_before) + "/" +
                   std::to_string(c.pad_after) + (algo == cuda::ConvAlgo::Naive ? " naive" : " tiled"));
      const Tensor y = Tensor::empty(ys, DType::F32, Device::CUDA);
      const Tensor dx = Tensor::zeros(x.shape(), DType::F32, Device::CUDA);
      const Tensor dw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
      cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), nullptr, y.data<float>(), algo);
      cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(), dx.data<float>(),
                            dw.data<float>(), nullptr, algo);
      expect_close(y.to_vector<float>(), y_ref.to_vector<float>(), "forward");
      expect_close(dx.to_vector<float>(), crop(dx_ref.to_vector<float>(), s.n, s.h, s.c_in, extra),
                   "dgrad");
      expect_close(dw.to_vector<float>(), dw_ref_ours_layout, "wgrad");
    }
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyConvolutionDescriptor(cd);
  }
  CUDNN_CHECK(cudnnDestroy(h));
}
#else
TEST(CudaCudnn, ConvolutionsMatchCudnn) { GTEST_SKIP() << cuda_unavailable_reason(); }
#endif

}  // namespace
}  // namespace ddpm
