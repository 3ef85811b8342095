// cuDNN's half of `cuda_conv: cudnn` (conv2d_cudnn.cu has the other half, the glue between
// our layouts and cuDNN's): the library, opened on first use; the engine's handle, on the
// engine's stream; and per shape and math a plan (descriptors, and per pass an algorithm and
// its workspace), made at the shape's first call and kept. Internal to kernels/cuda.
//
// Which algorithm. cuDNN's v7 heuristics rank the algorithms it has for a problem, each
// with a status, its determinism and its workspace, without running any.
//  - By default the plan takes the first that succeeds and is deterministic (a resumed run
//    repeats bit for bit, as with our kernels; cuDNN's non-deterministic dgrads and wgrads
//    add with atomics), else the first that succeeds.
//  - With set_conv2d_cudnn_benchmark (config key cuda_autotune) the plan times them, as
//    torch.backends.cudnn.benchmark does: every deterministic algorithm the heuristics rank
//    whose workspace is at most kCudnnBenchmarkWorkspaceCap runs on scratch operands of the
//    shape through the chooser every autotuner of the engine uses (autotune_check.cuh). The
//    heuristics' own pick is the reference; each other algorithm's output is checked against
//    it before it is timed; the fastest is kept. One line per shape and pass names what each
//    took. Why not cudnnFind: it times by its own rules and checks no output. PyTorch's
//    benchmark also takes the non-deterministic algorithms (its default
//    torch.backends.cudnn.deterministic is false); ours does not, for the reason above.
// The timing allocates and waits, which a CUDA graph's capture cannot hold: with benchmark
// on, a shape must first be seen by an eager call (as under cuda_conv: auto).
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cuda/conv2d_cudnn.cuh"

namespace ddpm::cuda::cudnn_detail {

// Every cuDNN function the engine calls, loaded once (dlopen, as cuBLAS is in linear.cu: its
// libraries are ~1 GB and most runs never call it); under the CPU emulation the emulated
// cuDNN's (tests/cuda_emulation/cudnn.h), called directly.
#define DDPM_CUDNN_FUNCTIONS(X)                                                             \
  X(cudnnCreate) X(cudnnSetStream) X(cudnnGetErrorString) X(cudnnCreateTensorDescriptor)    \
  X(cudnnSetTensor4dDescriptor) X(cudnnCreateFilterDescriptor) X(cudnnSetFilter4dDescriptor) \
  X(cudnnCreateConvolutionDescriptor) X(cudnnSetConvolution2dDescriptor)                    \
  X(cudnnSetConvolutionMathType) X(cudnnGetConvolutionForwardAlgorithm_v7)                   \
  X(cudnnGetConvolutionBackwardDataAlgorithm_v7)                                            \
  X(cudnnGetConvolutionBackwardFilterAlgorithm_v7) X(cudnnGetConvolutionForwardWorkspaceSize) \
  X(cudnnGetConvolutionBackwardDataWorkspaceSize)                                           \
  X(cudnnGetConvolutionBackwardFilterWorkspaceSize) X(cudnnConvolutionForward)              \
  X(cudnnConvolutionBackwardData) X(cudnnConvolutionBackwardFilter)

struct Cudnn {
#define DDPM_CUDNN_FIELD(f) decltype(&::f) f;
  DDPM_CUDNN_FUNCTIONS(DDPM_CUDNN_FIELD)
#undef DDPM_CUDNN_FIELD
};

const Cudnn& cudnn();
// Throws the engine's error naming the call when status is not CUDNN_STATUS_SUCCESS.
void check(cudnnStatus_t status, const char* call, const char* file, int line);
// (within namespace ddpm::cuda)
#define DDPM_CUDNN(call) cudnn_detail::check(cudnn_detail::cudnn().call, #call, __FILE__, __LINE__)
cudnnHandle_t handle();

struct Plan {
  bool supported = false;
  std::string why;  // when not supported
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t data{};
  cudnnConvolutionBwdFilterAlgo_t filter{};
  size_t fwd_bytes = 0, data_bytes = 0, filter_bytes = 0;  // cuDNN's workspaces
  int64_t in_h = 0, in_w = 0;  // the input cuDNN convolves: x padded when asymmetric
  int top = 0, left = 0;       // where x sits in it
  bool padded = false;         // asymmetric padding: x is staged with the extra zeros
};

// "(N, H, W, Cin) k3x3 -> Cout stride S pad T,L,B,R MATH": a shape in the plans' lines.
std::string describe(const Conv2dShape& s, CudnnMath math);

// The plan of s in `math`, made and printed on first use ("cudnn: conv ...: forward algo F,
// dgrad algo D, wgrad algo W, workspace M MiB", after the benchmark's lines when it is on),
// then kept for the process (the benchmark setting is part of its key).
const Plan& plan(const Conv2dShape& s, CudnnMath math);
// The same, or an error naming the shape and cuDNN's reason when it cannot run it.
const Plan& supported_plan(const Conv2dShape& s, CudnnMath math);

}  // namespace ddpm::cuda::cudnn_detail
