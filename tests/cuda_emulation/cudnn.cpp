#include "tests/cuda_emulation/cudnn.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/tf32.h"

struct cudnnContext {
  cudaStream_t stream = nullptr;  // cudnnSetStream's; calls on it are noted (runtime.h)
};

struct cudnnTensorStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};

struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, r = 0, s = 0;  // (K, R, S, C) in memory: NHWC filters
};

struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  *handle = new cudnnContext();
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

// ---- descriptors ----

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc) {
  *desc = new cudnnTensorStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc) {
  *desc = new cudnnFilterStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc) {
  *desc = new cudnnConvolutionStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}

namespace {

bool emulated_type(cudnnDataType_t t) { return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_BFLOAT16; }

}  // namespace

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  if (desc == nullptr || n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NHWC || !emulated_type(type)) return CUDNN_STATUS_NOT_SUPPORTED;
  *desc = cudnnTensorStruct{true, type, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (desc == nullptr || k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NHWC || !emulated_type(type)) return CUDNN_STATUS_NOT_SUPPORTED;
  *desc = cudnnFilterStruct{true, type, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
  if (desc == nullptr || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 ||
      dilation_w <= 0)
    return CUDNN_STATUS_BAD_PARAM;
  if (dilation_h != 1 || dilation_w != 1 || mode != CUDNN_CROSS_CORRELATION ||
      compute_type != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_NOT_SUPPORTED;
  desc->set = true;
  desc->pad_h = pad_h;
  desc->pad_w = pad_w;
  desc->stride_h = u;
  desc->stride_w = v;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math) {
  if (desc == nullptr) return CUDNN_STATUS_BAD_PARAM;
  desc->math = math;
  return CUDNN_STATUS_SUCCESS;
}

// ---- one problem: x (N, H, W, C) * w (K, R, S, C) -> y (N, P, Q, K) ----

namespace {

// The descriptors must be set and agree with each other, as cuDNN checks them.
cudnnStatus_t check_problem(cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                            cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y) {
  if (x == nullptr || w == nullptr || conv == nullptr || y == nullptr || !x->set || !w->set ||
      !conv->set || !y->set)
    return CUDNN_STATUS_BAD_PARAM;
  const int p = (x->h + 2 * conv->pad_h - w->r) / conv->stride_h + 1;
  const int q = (x->w + 2 * conv->pad_w - w->s) / conv->stride_w + 1;
  if (x->c != w->c || y->c != w->k || y->n != x->n || y->h != p || y->w != q || p <= 0 || q <= 0)
    return CUDNN_STATUS_BAD_PARAM;
  if (x->type != w->type || y->type != x->type) return CUDNN_STATUS_BAD_PARAM;
  return CUDNN_STATUS_SUCCESS;
}

enum class Pass { Forward, Data, Filter };

// The heuristics' ranking of each pass, best first: the algorithm's number, whether it can
// run, its determinism and its workspace in floats per output channel (kTerabyte: a
// terabyte, which no benchmark may allocate).
struct Ranked {
  int algo;
  bool runs;
  cudnnDeterminism_t determinism;
  size_t floats_per_output_channel;
};
constexpr size_t kTerabyte = ~size_t{0};
constexpr Ranked kForward[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, true, CUDNN_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, true, CUDNN_DETERMINISTIC, 0},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, false, CUDNN_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT, true, CUDNN_DETERMINISTIC, kTerabyte}};
constexpr Ranked kData[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, true, CUDNN_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, true, CUDNN_NON_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, true, CUDNN_DETERMINISTIC, 2}};
constexpr Ranked kFilter[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, true, CUDNN_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, true, CUDNN_NON_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, true, CUDNN_NON_DETERMINISTIC, 1},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, true, CUDNN_DETERMINISTIC, 2}};

template <size_t kN>
std::vector<Ranked> as_list(const Ranked (&r)[kN]) {
  return std::vector<Ranked>(r, r + kN);
}
const std::vector<Ranked>& ranking(Pass pass) {
  static const std::vector<Ranked> lists[] = {as_list(kForward), as_list(kData),
                                              as_list(kFilter)};
  return lists[static_cast<int>(pass)];
}

// The entry of `algo` in the pass's ranking, or null when the pass has no such algorithm.
const Ranked* find(Pass pass, int algo) {
  for (const Ranked& r : ranking(pass))
    if (r.algo == algo) return &r;
  return nullptr;
}

size_t required_workspace(const Ranked& r, cudnnFilterDescriptor_t w) {
  const size_t floats = r.floats_per_output_channel;
  return floats == kTerabyte ? size_t{1} << 40 : sizeof(float) * w->k * floats;
}

int g_refuse_below = 0;  // cuda_emu::cudnn_refuse_inputs_below
int g_broken = -1;       // cuda_emu::cudnn_break_algorithm
int g_slow = -1;         // cuda_emu::cudnn_slow_algorithm: the algorithm, and by how much
double g_slow_ms = 0.0;

template <class Perf>
cudnnStatus_t heuristic(Pass pass, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                        cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y,
                        int requested, int* returned, Perf* perf) {
  if (requested < 1 || returned == nullptr || perf == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t status = check_problem(x, w, conv, y);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  using Algo = decltype(Perf::algo);
  const std::vector<Ranked>& list = ranking(pass);
  if (x->c < g_refuse_below) {  // one candidate, which cannot run
    *perf = Perf{static_cast<Algo>(list[0].algo), CUDNN_STATUS_NOT_SUPPORTED, -1.0f,
                 required_workspace(list[0], w), CUDNN_DETERMINISTIC, conv->math, {0, 0, 0}};
    *returned = 1;
    return CUDNN_STATUS_SUCCESS;
  }
  *returned = std::min(requested, static_cast<int>(list.size()));
  for (int i = 0; i < *returned; ++i)
    perf[i] = Perf{static_cast<Algo>(list[i].algo),
                   list[i].runs ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED, -1.0f,
                   required_workspace(list[i], w), list[i].determinism, conv->math, {0, 0, 0}};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace_size(Pass pass, int algo, cudnnTensorDescriptor_t x,
                             cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                             cudnnTensorDescriptor_t y, size_t* bytes) {
  if (bytes == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t status = check_problem(x, w, conv, y);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  const Ranked* r = find(pass, algo);
  if (r == nullptr || !r->runs) return CUDNN_STATUS_NOT_SUPPORTED;
  *bytes = required_workspace(*r, w);
  return CUDNN_STATUS_SUCCESS;
}

size_t elements(const cudnnTensorStruct* t) { return size_t(t->n) * t->c * t->h * t->w; }
size_t elements(const cudnnFilterStruct* f) { return size_t(f->k) * f->r * f->s * f->c; }
size_t element_bytes(cudnnDataType_t t) { return t == CUDNN_DATA_BFLOAT16 ? 2 : 4; }

// The operand's values, as the math reads them: bf16 decoded; float rounded to TF32 when
// tensor-op math is allowed (what tensor cores do to fp32 operands).
std::vector<double> decode(const void* p, size_t n, cudnnDataType_t type, cudnnMathType_t math) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (type == CUDNN_DATA_BFLOAT16) {
      v[i] = ddpm::float_from_bf16_bits(static_cast<const uint16_t*>(p)[i]);
    } else {
      const float f = static_cast<const float*>(p)[i];
      v[i] = math == CUDNN_TENSOR_OP_MATH ? ddpm::round_to_tf32(f) : f;
    }
  }
  return v;
}

// out = alpha acc + beta out, rounded once to the tensor's type (beta 0 reads nothing).
void store(const std::vector<double>& acc, double alpha, double beta, void* out,
           cudnnDataType_t type) {
  for (size_t i = 0; i < acc.size(); ++i) {
    if (type == CUDNN_DATA_BFLOAT16) {
      uint16_t& o = static_cast<uint16_t*>(out)[i];
      const double old = beta == 0.0 ? 0.0 : ddpm::float_from_bf16_bits(o);
      o = ddpm::bf16_bits_from_float(static_cast<float>(alpha * acc[i] + beta * old));
    } else {
      float& o = static_cast<float*>(out)[i];
      o = static_cast<float>(alpha * acc[i] + (beta == 0.0 ? 0.0 : beta * o));
    }
  }
}

// One loop nest for the three passes: every (output pixel, filter tap) pair that lands
// inside the input contributes its channel products to the pass's output.
//   Forward  y[n,p,q,k]  += x[n,h,w,c] w[k,r,s,c]
//   Data     dx[n,h,w,c] += dy[n,p,q,k] w[k,r,s,c]
//   Filter   dw[k,r,s,c] += dy[n,p,q,k] x[n,h,w,c]
std::vector<double> convolve(Pass pass, const cudnnTensorStruct* xd, const cudnnFilterStruct* wd,
                             const cudnnConvolutionStruct* conv, const cudnnTensorStruct* yd,
                             const std::vector<double>& a, const std::vector<double>& b) {
  const int C = xd->c, K = wd->k;
  std::vector<double> out(pass == Pass::Forward ? elements(yd)
                          : pass == Pass::Data  ? elements(xd)
                                                : elements(wd),
                          0.0);
  for (int n = 0; n < xd->n; ++n)
    for (int p = 0; p < yd->h; ++p)
      for (int q = 0; q < yd->w; ++q)
        for (int r = 0; r < wd->r; ++r)
          for (int s = 0; s < wd->s; ++s) {
            const int h = p * conv->stride_h - conv->pad_h + r;
            const int w = q * conv->stride_w - conv->pad_w + s;
            if (h < 0 || h >= xd->h || w < 0 || w >= xd->w) continue;
            const size_t xi = ((size_t(n) * xd->h + h) * xd->w + w) * C;
            const size_t yi = ((size_t(n) * yd->h + p) * yd->w + q) * K;
            for (int k = 0; k < K; ++k) {
              const size_t wi = ((size_t(k) * wd->r + r) * wd->s + s) * C;
              for (int c = 0; c < C; ++c) {
                if (pass == Pass::Forward) out[yi + k] += a[xi + c] * b[wi + c];
                else if (pass == Pass::Data) out[xi + c] += a[yi + k] * b[wi + c];
                else out[wi + c] += a[yi + k] * b[xi + c];
              }
            }
          }
  return out;
}

// The checks every convolution call makes, then the pass: run now, or recorded by a capture
// of the handle's stream and run by each launch of its graph.
cudnnStatus_t run(cudnnHandle_t handle, Pass pass, int algo, const void* alpha,
                  cudnnTensorDescriptor_t xd, const void* x, cudnnFilterDescriptor_t wd,
                  const void* w, cudnnConvolutionDescriptor_t conv, void* workspace,
                  size_t workspace_bytes, const void* beta, cudnnTensorDescriptor_t yd,
                  const void* y, void* out) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  if (alpha == nullptr || beta == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t status = check_problem(xd, wd, conv, yd);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  const Ranked* ranked = find(pass, algo);
  if (ranked == nullptr || !ranked->runs) return CUDNN_STATUS_NOT_SUPPORTED;
  const size_t needed = required_workspace(*ranked, wd);
  if (workspace_bytes < needed) return CUDNN_STATUS_BAD_PARAM;
  cuda_emu::note_stream(handle->stream);
  const size_t bytes = element_bytes(xd->type);
  // (an algorithm that needs no workspace takes a null one)
  if ((needed > 0 && !cuda_emu::device_accessible(workspace, needed)) ||
      !cuda_emu::device_accessible(x, elements(xd) * bytes) ||
      !cuda_emu::device_accessible(w, elements(wd) * bytes) ||
      !cuda_emu::device_accessible(y, elements(yd) * bytes))
    return CUDNN_STATUS_EXECUTION_FAILED;
  // alpha and beta are host floats for float and bf16 data; read now, as cuDNN does
  // (a broken algorithm's result twice what it should be: cuda_emu::cudnn_break_algorithm)
  const double a = *static_cast<const float*>(alpha) * (algo == g_broken ? 2.0 : 1.0);
  const double b = *static_cast<const float*>(beta);
  const cudnnDataType_t type = xd->type;
  const cudnnMathType_t math = conv->math;
  // copies: the descriptors may be changed or destroyed before a captured call replays
  const cudnnTensorStruct xs = *xd, ys = *yd;
  const cudnnFilterStruct ws = *wd;
  const cudnnConvolutionStruct cs = *conv;
  const double slow_ms = algo == g_slow ? g_slow_ms : 0.0;
  const auto work = [=] {
    if (slow_ms > 0)
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(slow_ms));
    const auto operand = [&](const void* p, size_t n) { return decode(p, n, type, math); };
    const size_t nx = elements(&xs), nw = elements(&ws), ny = elements(&ys);
    std::vector<double> acc;
    if (pass == Pass::Forward)  // x * w
      acc = convolve(pass, &xs, &ws, &cs, &ys, operand(x, nx), operand(w, nw));
    else if (pass == Pass::Data)  // dy * w
      acc = convolve(pass, &xs, &ws, &cs, &ys, operand(y, ny), operand(w, nw));
    else  // dy * x
      acc = convolve(pass, &xs, &ws, &cs, &ys, operand(y, ny), operand(x, nx));
    store(acc, a, b, out, type);
  };
  if (!cuda_emu::captured(handle->stream, work)) work();
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

void cuda_emu::cudnn_refuse_inputs_below(int channels) { g_refuse_below = channels; }
void cuda_emu::cudnn_break_algorithm(int algo) { g_broken = algo; }
void cuda_emu::cudnn_slow_algorithm(int algo, double ms) {
  g_slow = algo;
  g_slow_ms = ms;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y, int requested, int* returned,
    cudnnConvolutionFwdAlgoPerf_t* perf) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return heuristic(Pass::Forward, x, w, conv, y, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t dx, int requested, int* returned,
    cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return heuristic(Pass::Data, dx, w, conv, dy, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return heuristic(Pass::Filter, x, dw, conv, dy, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle,
                                                      cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t* bytes) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return workspace_size(Pass::Forward, algo, x, w, conv, y, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle,
                                                           cudnnFilterDescriptor_t w,
                                                           cudnnTensorDescriptor_t dy,
                                                           cudnnConvolutionDescriptor_t conv,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo,
                                                           size_t* bytes) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return workspace_size(Pass::Data, algo, dx, w, conv, dy, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle,
                                                             cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t dy,
                                                             cudnnConvolutionDescriptor_t conv,
                                                             cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                                             size_t* bytes) {
  if (handle == nullptr) return CUDNN_STATUS_NOT_INITIALIZED;
  return workspace_size(Pass::Filter, algo, x, dw, conv, dy, bytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                      cudnnTensorDescriptor_t x_desc, const void* x,
                                      cudnnFilterDescriptor_t w_desc, const void* w,
                                      cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void* workspace,
                                      size_t workspace_bytes, const void* beta,
                                      cudnnTensorDescriptor_t y_desc, void* y) {
  return run(handle, Pass::Forward, algo, alpha, x_desc, x, w_desc, w, conv, workspace,
             workspace_bytes, beta, y_desc, y, y);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           cudnnFilterDescriptor_t w_desc, const void* w,
                                           cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workspace,
                                           size_t workspace_bytes, const void* beta,
                                           cudnnTensorDescriptor_t dx_desc, void* dx) {
  return run(handle, Pass::Data, algo, alpha, dx_desc, dx, w_desc, w, conv, workspace,
             workspace_bytes, beta, dy_desc, dy, dx);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             cudnnTensorDescriptor_t x_desc, const void* x,
                                             cudnnTensorDescriptor_t dy_desc, const void* dy,
                                             cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                             void* workspace, size_t workspace_bytes,
                                             const void* beta, cudnnFilterDescriptor_t dw_desc,
                                             void* dw) {
  return run(handle, Pass::Filter, algo, alpha, x_desc, x, dw_desc, dw, conv, workspace,
             workspace_bytes, beta, dy_desc, dy, dw);
}
