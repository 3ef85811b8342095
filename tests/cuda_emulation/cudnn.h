// cuDNN, emulated: the legacy convolution API that kernels/cuda/conv2d_cudnn.cu calls
// (handle and stream, tensor / filter / convolution descriptors, the v7 heuristics, the
// workspace sizes, and the forward, backward-data and backward-filter convolutions), so the
// engine's glue around cuDNN (the weight transposition to cuDNN's filter layout, the
// asymmetric padding cuDNN's descriptors cannot express, the bf16 staging and the
// accumulation of the gradients) runs and is checked without a GPU.
//
// What is emulated is cuDNN's documented contract, not its speed:
//   - 4-D NHWC tensors (CUDNN_TENSOR_NHWC); a filter in NHWC format is (K, R, S, C): output
//     channel, filter row, filter column, input channel, channels innermost;
//   - CUDNN_CROSS_CORRELATION (what a deep-learning convolution is), symmetric padding,
//     stride, dilation 1, one group;
//   - FLOAT_CONFIG (x, w, y float, compute float) and BFLOAT16_CONFIG (x, w, y bf16, compute
//     float): the sums in double, each output rounded once to the tensor's type (bf16 to
//     nearest even); CUDNN_TENSOR_OP_MATH on float data rounds the operands to TF32 first,
//     as tensor cores do, CUDNN_FMA_MATH does not;
//   - y = alpha conv + beta y (beta 0 never reads y, which may hold NaNs);
//   - the v7 heuristics rank several algorithms per pass, as cuDNN's do: first a
//     deterministic one asking for a workspace of one float per output channel (so the
//     engine's workspace plumbing is exercised), then others (cudnn.cpp's table):
//     deterministic ones asking for none or two floats per output channel, non-deterministic
//     ones, one that cannot run (CUDNN_STATUS_NOT_SUPPORTED) and one asking for a terabyte.
//     All compute the same sums, one way. A call with a smaller workspace than its
//     algorithm's is CUDNN_STATUS_BAD_PARAM, with an algorithm the pass cannot run
//     CUDNN_STATUS_NOT_SUPPORTED, with a buffer that is not device memory
//     CUDNN_STATUS_EXECUTION_FAILED;
//   - calls on a captured stream are recorded and run by each launch of the graph.
// Anything else (NCHW, another data type, dilation, groups) is CUDNN_STATUS_NOT_SUPPORTED.
// The enum values are cuDNN 9's. A test can make the heuristics find no algorithm for inputs
// of few channels (cuda_emu::cudnn_refuse_inputs_below), as the real library may for bf16
// NHWC inputs of 3 channels, to test what the engine does then.
#pragma once

#include <cstddef>

#include "tests/cuda_emulation/runtime.h"

enum cudnnStatus_t {
  CUDNN_STATUS_SUCCESS = 0,
  CUDNN_STATUS_NOT_INITIALIZED = 1001,
  CUDNN_STATUS_BAD_PARAM = 2000,
  CUDNN_STATUS_NOT_SUPPORTED = 3000,
  CUDNN_STATUS_EXECUTION_FAILED = 5000,
};
enum cudnnDataType_t { CUDNN_DATA_FLOAT = 0, CUDNN_DATA_DOUBLE = 1, CUDNN_DATA_HALF = 2,
                       CUDNN_DATA_BFLOAT16 = 9 };
enum cudnnMathType_t { CUDNN_DEFAULT_MATH = 0, CUDNN_TENSOR_OP_MATH = 1,
                       CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2, CUDNN_FMA_MATH = 3 };
enum cudnnTensorFormat_t { CUDNN_TENSOR_NCHW = 0, CUDNN_TENSOR_NHWC = 1 };
enum cudnnConvolutionMode_t { CUDNN_CONVOLUTION = 0, CUDNN_CROSS_CORRELATION = 1 };
enum cudnnDeterminism_t { CUDNN_NON_DETERMINISTIC = 0, CUDNN_DETERMINISTIC = 1 };
enum cudnnConvolutionFwdAlgo_t { CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM = 0,
                                 CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM = 1,
                                 CUDNN_CONVOLUTION_FWD_ALGO_FFT = 4,
                                 CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD = 6 };
enum cudnnConvolutionBwdDataAlgo_t { CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 = 0,
                                     CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 = 1,
                                     CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING = 3 };
enum cudnnConvolutionBwdFilterAlgo_t { CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 = 0,
                                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 = 1,
                                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 = 3,
                                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING = 6 };

template <class Algo>
struct cudnnAlgoPerfEmulated {
  Algo algo;
  cudnnStatus_t status;
  float time;
  size_t memory;
  cudnnDeterminism_t determinism;
  cudnnMathType_t mathType;
  int reserved[3];
};
using cudnnConvolutionFwdAlgoPerf_t = cudnnAlgoPerfEmulated<cudnnConvolutionFwdAlgo_t>;
using cudnnConvolutionBwdDataAlgoPerf_t = cudnnAlgoPerfEmulated<cudnnConvolutionBwdDataAlgo_t>;
using cudnnConvolutionBwdFilterAlgoPerf_t = cudnnAlgoPerfEmulated<cudnnConvolutionBwdFilterAlgo_t>;

namespace cuda_emu {
// From now on the v7 heuristics return one candidate with CUDNN_STATUS_NOT_SUPPORTED for an
// input of fewer than `channels` channels (0: never, the default).
void cudnn_refuse_inputs_below(int channels);
// From now on every convolution call with algorithm number `algo` (in any pass that has it)
// writes twice its result: a wrong algorithm, for the tests of what times and chooses among
// them (conv2d_cudnn_plan.cuh). -1: none (the default).
void cudnn_break_algorithm(int algo);
// From now on every convolution call with algorithm number `algo` takes `ms` milliseconds
// longer: a slow algorithm, so that a test knows which one timing keeps. -1: none.
void cudnn_slow_algorithm(int algo, double ms);
}  // namespace cuda_emu

struct cudnnContext;
struct cudnnTensorStruct;
struct cudnnFilterStruct;
struct cudnnConvolutionStruct;
using cudnnHandle_t = cudnnContext*;
using cudnnTensorDescriptor_t = cudnnTensorStruct*;
using cudnnFilterDescriptor_t = cudnnFilterStruct*;
using cudnnConvolutionDescriptor_t = cudnnConvolutionStruct*;

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle);
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle);
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream);
const char* cudnnGetErrorString(cudnnStatus_t status);

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc);
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc);
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w);
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc);
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc);
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w);
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc);
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc);
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type);
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math);

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y, int requested, int* returned,
    cudnnConvolutionFwdAlgoPerf_t* perf);
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t dx, int requested, int* returned,
    cudnnConvolutionBwdDataAlgoPerf_t* perf);
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf);
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle,
                                                      cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t* bytes);
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle,
                                                           cudnnFilterDescriptor_t w,
                                                           cudnnTensorDescriptor_t dy,
                                                           cudnnConvolutionDescriptor_t conv,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo,
                                                           size_t* bytes);
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle,
                                                             cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t dy,
                                                             cudnnConvolutionDescriptor_t conv,
                                                             cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                                             size_t* bytes);

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                      cudnnTensorDescriptor_t x_desc, const void* x,
                                      cudnnFilterDescriptor_t w_desc, const void* w,
                                      cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void* workspace,
                                      size_t workspace_bytes, const void* beta,
                                      cudnnTensorDescriptor_t y_desc, void* y);
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           cudnnFilterDescriptor_t w_desc, const void* w,
                                           cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workspace,
                                           size_t workspace_bytes, const void* beta,
                                           cudnnTensorDescriptor_t dx_desc, void* dx);
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             cudnnTensorDescriptor_t x_desc, const void* x,
                                             cudnnTensorDescriptor_t dy_desc, const void* dy,
                                             cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                             void* workspace, size_t workspace_bytes,
                                             const void* beta, cudnnFilterDescriptor_t dw_desc,
                                             void* dw);
