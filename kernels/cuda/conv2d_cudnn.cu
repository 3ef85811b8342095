// The engine's convolutions through cuDNN's legacy API, behind `cuda_conv: cudnn`.
//
// Why: our bar is cuDNN's speed. With this the same training step of the same model runs
// on cuDNN's convolutions and our everything else, so the step-level ratio (kernel-bench
// step) is one config key away, not only the per-kernel rows of kernel-bench conv.
//
// The glue cuDNN needs, per call. Each piece is one memory-bound pass, the price of using
// the library from our layouts; a profile (`profile_steps`) shows them as part of conv2d:
//  1. Weights. Ours are (KH, KW, Cin, Cout): a (K x Cout) matrix, K = KH*KW*Cin. cuDNN's
//     NHWC filter is (Cout, KH, KW, Cin): its transpose. transpose_kernel writes that into the
//     workspace (as bf16 under bf16); the weight gradient comes back in cuDNN's layout and
//     is transposed back while it is added onto dw.
//  2. Asymmetric padding. The legacy descriptor pads both sides alike; the TF-'SAME'
//     downsample pads 0 rows/columns before and 1 after. The symmetric part (0) is cuDNN's
//     and the rest becomes zeros around a staged copy of x (stage_kernel): the same products.
//     The input gradient then comes back for the staged input and is cropped onto dx.
//  3. bf16. x and dy are converted in the same staging pass; y, dx and dw come back as bf16
//     (cuDNN's bf16 convolutions write bf16) and are widened by the pass that adds the bias,
//     time embedding and residual (add_to_rows, row_adds.cuh) or accumulates the gradient. On bf16
//     activations x and dy are cuDNN's as they are (staged only when padded), and y and dx
//     stay bf16 (the epilogue rounds y again after its adds; dx is accumulated by cuDNN).
// fp32 with symmetric padding stages only the weights, and the input gradient is cuDNN's own
// accumulation into dx (beta = 1).
//
// Algorithms come from cuDNN's v7 heuristics, asked once per shape and math and kept (a
// plan): the first that succeeds and is deterministic (a resumed run repeats bit for bit, as
// with our kernels; cuDNN's non-deterministic wgrads use atomics), else the first that
// succeeds. Each plan is printed once. cudnnFind (timing every algorithm) is not used: it
// allocates and synchronises, which a captured step cannot.
//
// cuDNN is opened (dlopen) on first use, as cuBLAS is (linear.cu): its libraries are ~1 GB
// and most runs never call it. Under the CPU emulation the emulated cuDNN
// (tests/cuda_emulation/cudnn.h) is called directly.
#if !DDPM_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <type_traits>

#include "engine/check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/row_adds.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

// ---- the library: every function the engine calls, loaded once ----

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

const Cudnn& cudnn() {
  static const Cudnn api = [] {
    Cudnn a{};
#if DDPM_CUDA_EMULATION
#define DDPM_CUDNN_DIRECT(f) a.f = &::f;
    DDPM_CUDNN_FUNCTIONS(DDPM_CUDNN_DIRECT)
#undef DDPM_CUDNN_DIRECT
#else
    const std::string soname = "libcudnn.so." + std::to_string(CUDNN_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef DDPM_CUDNN_LIBRARY_DIR
    if (lib == nullptr)
      lib = dlopen((DDPM_CUDNN_LIBRARY_DIR "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    CHECK(lib != nullptr, "cuda_conv: cudnn needs cuDNN " << CUDNN_MAJOR << ": cannot load "
                                                          << soname << ": " << dlerror());
    const auto symbol = [&](const char* name) {
      void* p = dlsym(lib, name);
      CHECK(p != nullptr, "cuDNN (" << soname << ") has no " << name);
      return p;
    };
#define DDPM_CUDNN_SYMBOL(f) a.f = reinterpret_cast<decltype(&::f)>(symbol(#f));
    DDPM_CUDNN_FUNCTIONS(DDPM_CUDNN_SYMBOL)
#undef DDPM_CUDNN_SYMBOL
#endif
    return a;
  }();
  return api;
}

void check(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw_error(file, line, std::string("cuDNN error: ") + cudnn().cudnnGetErrorString(status),
                call);
}
#define DDPM_CUDNN(call) check(cudnn().call, #call, __FILE__, __LINE__)

cudnnHandle_t handle() {
  static const cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    DDPM_CUDNN(cudnnCreate(&created));
    DDPM_CUDNN(cudnnSetStream(created, engine_stream()));  // engine/cuda_stream.h
    return created;
  }();
  return h;
}

// ---- the staging passes (one thread per element; kThreads: launch.cuh's default) ----

// out (N, in_h, in_w, C) = x (N, H, W, C) placed at (top, left), zeros around it, as T.
template <class S, class T>
__global__ void stage_kernel(Conv2dShape s, int64_t in_h, int64_t in_w, int top, int left,
                             const S* x, T* out) {
  const int64_t total = s.n * in_h * in_w * s.c_in;
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c_in, col = (i / s.c_in) % in_w, row = (i / (s.c_in * in_w)) % in_h;
    const int64_t n = i / (s.c_in * in_w * in_h), h = row - top, w = col - left;
    const bool inside = h >= 0 && h < s.h && w >= 0 && w < s.w;
    store(out, i, inside ? load(x, ((n * s.h + h) * s.w + w) * s.c_in + c) : 0.0f);
  }
}

// dx (N, H, W, C) += the staged input gradient (N, in_h, in_w, C) at (top, left).
template <class T, class A>
__global__ void crop_accumulate_kernel(Conv2dShape s, int64_t in_h, int64_t in_w, int top,
                                       int left, const T* staged, A* dx, bool add) {
  const int64_t total = s.n * s.h * s.w * s.c_in;
  DDPM_GRID_STRIDE(i, total) {
    const int64_t c = i % s.c_in, w = (i / s.c_in) % s.w, h = (i / (s.c_in * s.w)) % s.h;
    const int64_t n = i / (s.c_in * s.w * s.h);
    const float d = load(staged, ((n * in_h + h + top) * in_w + w + left) * s.c_in + c);
    store_grad(dx, i, d, add);
  }
}

// b (cols x rows) = a (rows x cols) transposed, or b += it. A 32x32 tile goes through shared
// memory so both the read and the write run along rows (coalesced); 33 columns so the
// column-wise reads of the tile hit 32 different banks. kTile = 32: a warp per tile row (one
// coalesced 128-byte read); kTileRows = 8: 256 threads a block, 4 elements each, enough
// loads in flight per thread without a block so large that small matrices leave SMs idle.
constexpr int kTile = 32, kTileRows = 8;
template <class In, class Out, bool kAccumulate>
__global__ void transpose_kernel(int64_t rows, int64_t cols, const In* a, Out* b) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int64_t r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = load(a, r * cols + c);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int64_t c = c0 + k, r = r0 + threadIdx.x;  // b's row c, column r
    if (r < rows && c < cols) {
      const float v = tile[threadIdx.x][k];
      store(b, c * rows + r, kAccumulate ? load(b, c * rows + r) + v : v);
    }
  }
}

template <class In, class Out, bool kAccumulate>
void transpose(int64_t rows, int64_t cols, const In* a, Out* b) {
  CHECK((rows + kTile - 1) / kTile <= 65535,
        "transpose: " << rows << " rows exceed the grid's y extent (65535 tiles)");
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
                  static_cast<unsigned>((rows + kTile - 1) / kTile));
  DDPM_LAUNCH((transpose_kernel<In, Out, kAccumulate>), grid, dim3(kTile, kTileRows))(rows, cols,
                                                                                        a, b);
}

// ---- plans: descriptors and algorithms per shape and math ----

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

const char* math_name(CudnnMath m) {
  return m == CudnnMath::Bf16 ? "bf16" : m == CudnnMath::Tf32 ? "TF32" : "fp32";
}

std::string describe(const Conv2dShape& s, CudnnMath m) {
  std::ostringstream os;
  os << "(" << s.n << ", " << s.h << ", " << s.w << ", " << s.c_in << ") k" << s.kh << "x" << s.kw
     << " -> " << s.c_out << " stride " << s.stride << " pad " << s.pad_top << "," << s.pad_left
     << "," << s.pad_bottom << "," << s.pad_right << " " << math_name(m);
  return os.str();
}

// The first candidate that succeeded and is deterministic, else the first that succeeded.
template <class Perf>
bool choose(cudnnStatus_t status, int returned, const Perf* perf, decltype(Perf::algo)* algo,
            std::string* why, const char* pass) {
  if (status != CUDNN_STATUS_SUCCESS) {
    *why = std::string(pass) + " heuristics: " + cudnn().cudnnGetErrorString(status);
    return false;
  }
  for (bool deterministic : {true, false})
    for (int i = 0; i < returned; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS &&
          (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC)) {
        *algo = perf[i].algo;
        return true;
      }
  *why = std::string("no ") + pass + " algorithm";
  return false;
}

Plan make_plan(const Conv2dShape& s, CudnnMath math) {
  Plan p;
  const int pad_h = std::min(s.pad_top, s.pad_bottom), pad_w = std::min(s.pad_left, s.pad_right);
  p.in_h = s.h + s.pad_top + s.pad_bottom - 2 * pad_h;
  p.in_w = s.w + s.pad_left + s.pad_right - 2 * pad_w;
  p.top = s.pad_top - pad_h;
  p.left = s.pad_left - pad_w;
  p.padded = p.in_h != s.h || p.in_w != s.w;
  const cudnnDataType_t data = math == CudnnMath::Bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const cudnnMathType_t mode = math == CudnnMath::Fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  const Cudnn& api = cudnn();
  // A descriptor cuDNN refuses makes the shape unsupported (and says which call), not fatal.
  const auto ok = [&](cudnnStatus_t status, const char* what) {
    if (status != CUDNN_STATUS_SUCCESS && p.why.empty())
      p.why = std::string(what) + ": " + api.cudnnGetErrorString(status);
    return p.why.empty();
  };
  DDPM_CUDNN(cudnnCreateTensorDescriptor(&p.x));
  DDPM_CUDNN(cudnnCreateTensorDescriptor(&p.y));
  DDPM_CUDNN(cudnnCreateFilterDescriptor(&p.w));
  DDPM_CUDNN(cudnnCreateConvolutionDescriptor(&p.conv));
  if (!ok(api.cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NHWC, data, i(s.n), i(s.c_in),
                                         i(p.in_h), i(p.in_w)), "input descriptor") ||
      !ok(api.cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NHWC, data, i(s.n), i(s.c_out),
                                         i(s.out_h()), i(s.out_w())), "output descriptor") ||
      !ok(api.cudnnSetFilter4dDescriptor(p.w, data, CUDNN_TENSOR_NHWC, i(s.c_out), i(s.c_in), s.kh,
                                         s.kw), "filter descriptor") ||
      !ok(api.cudnnSetConvolution2dDescriptor(p.conv, pad_h, pad_w, s.stride, s.stride, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
          "convolution descriptor") ||
      !ok(api.cudnnSetConvolutionMathType(p.conv, mode), "math type"))
    return p;
  constexpr int kCandidates = 8;  // cuDNN's list, best first; enough to find a deterministic one
  int n = 0;  // (set by each query before choose reads it: separate statements)
  cudnnConvolutionFwdAlgoPerf_t fp[kCandidates];
  cudnnStatus_t status = api.cudnnGetConvolutionForwardAlgorithm_v7(handle(), p.x, p.w, p.conv,
                                                                    p.y, kCandidates, &n, fp);
  if (!choose(status, n, fp, &p.fwd, &p.why, "forward")) return p;
  cudnnConvolutionBwdDataAlgoPerf_t dp[kCandidates];
  status = api.cudnnGetConvolutionBackwardDataAlgorithm_v7(handle(), p.w, p.y, p.conv, p.x,
                                                           kCandidates, &n, dp);
  if (!choose(status, n, dp, &p.data, &p.why, "dgrad")) return p;
  cudnnConvolutionBwdFilterAlgoPerf_t wp[kCandidates];
  status = api.cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle(), p.x, p.y, p.conv, p.w,
                                                             kCandidates, &n, wp);
  if (!choose(status, n, wp, &p.filter, &p.why, "wgrad")) return p;
  if (!ok(api.cudnnGetConvolutionForwardWorkspaceSize(handle(), p.x, p.w, p.conv, p.y, p.fwd,
                                                      &p.fwd_bytes), "forward workspace") ||
      !ok(api.cudnnGetConvolutionBackwardDataWorkspaceSize(handle(), p.w, p.y, p.conv, p.x, p.data,
                                                           &p.data_bytes), "dgrad workspace") ||
      !ok(api.cudnnGetConvolutionBackwardFilterWorkspaceSize(handle(), p.x, p.y, p.conv, p.w,
                                                             p.filter, &p.filter_bytes),
          "wgrad workspace"))
    return p;
  p.supported = true;
  return p;
}

const Plan& plan(const Conv2dShape& s, CudnnMath math) {
  static std::mutex mutex;
  // Never destroyed, like the handle: the descriptors must outlive every use, and at exit
  // cuDNN may already be unloaded.
  static auto& plans = *new std::map<std::array<int64_t, 13>, Plan>();
  const std::array<int64_t, 13> key{s.n, s.h, s.w, s.c_in, s.c_out, s.kh, s.kw, s.stride,
                                    s.pad_top, s.pad_left, s.pad_bottom, s.pad_right,
                                    static_cast<int64_t>(math)};
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  const Plan& p = plans.emplace(key, make_plan(s, math)).first->second;
  if (p.supported)
    std::printf("cudnn: conv %s: forward algo %d, dgrad algo %d, wgrad algo %d, workspace "
                "%.2f MiB\n", describe(s, math).c_str(), static_cast<int>(p.fwd),
                static_cast<int>(p.data), static_cast<int>(p.filter),
                std::max({p.fwd_bytes, p.data_bytes, p.filter_bytes}) / 1048576.0);
  else
    std::printf("cudnn: conv %s: cuDNN cannot run it (%s); the engine's own kernel runs this "
                "shape\n", describe(s, math).c_str(), p.why.c_str());
  return p;
}

const Plan& supported_plan(const Conv2dShape& s, CudnnMath math) {
  const Plan& p = plan(s, math);
  CHECK(p.supported, "cuDNN cannot run the convolution " << describe(s, math) << ": " << p.why);
  return p;
}

// ---- the workspace: staged operands and cuDNN's own, each 256-byte aligned ----

struct Layout {
  int64_t x = 0, w = 0, y = 0, dy = 0, dx = 0, dw = 0, library = 0, total = 0;  // floats
};

template <class T>
int64_t floats_of(int64_t elements) {
  return (elements * static_cast<int64_t>(sizeof(T)) + 3) / 4;
}

int64_t section(Layout& l, int64_t floats) {
  const int64_t at = l.total;
  l.total += (floats + 63) / 64 * 64;
  return at;
}

// The sections the passes stage (an empty one where nothing is staged): one layout for the
// forward and the backward pass.
template <class T>
Layout layout(const Conv2dShape& s, const Plan& p) {
  constexpr bool kBf16 = sizeof(T) == 2;
  Layout l;
  const int64_t taps = static_cast<int64_t>(s.kh) * s.kw;
  // room for x staged: padded, or fp32 activations converted for the bf16 math (sized for
  // either storage of the activations: the workspace query does not know which comes)
  const int64_t staged_input = p.padded || kBf16 ? s.n * p.in_h * p.in_w * s.c_in : 0;
  l.x = section(l, floats_of<T>(staged_input));
  l.w = section(l, floats_of<T>(taps * s.c_in * s.c_out));
  l.y = section(l, floats_of<T>(kBf16 ? s.n * s.out_h() * s.out_w() * s.c_out : 0));
  l.dy = l.y;  // y's copy in the forward pass, dy's in the backward pass
  l.dx = section(l, floats_of<T>(staged_input));
  l.dw = section(l, floats_of<T>(taps * s.c_in * s.c_out));
  l.library = section(l, static_cast<int64_t>(
                             (std::max({p.fwd_bytes, p.data_bytes, p.filter_bytes}) + 3) / 4));
  return l;
}

template <class T>
T* at(float* workspace, int64_t offset) {
  return reinterpret_cast<T*>(workspace + offset);
}

// cuDNN's own workspace for a call needing `bytes`: null for none (never a pointer past the end).
void* library_workspace(float* workspace, const Layout& l, size_t bytes) {
  return bytes > 0 ? workspace + l.library : nullptr;
}

// Whether x of storage A is staged for cuDNN reading T: when padded, or to be converted.
template <class T, class A>
bool stages(const Plan& p) {
  return p.padded || !std::is_same_v<T, A>;
}

// The input cuDNN convolves: x itself, or x staged (padded, converted) into the workspace.
template <class T, class A>
const void* staged_input(const Conv2dShape& s, const Plan& p, const A* x, T* out) {
  if (!stages<T, A>(p)) return x;
  DDPM_LAUNCH((stage_kernel<A, T>), grid_for(s.n * p.in_h * p.in_w * s.c_in), kThreads)(
      s, p.in_h, p.in_w, p.top, p.left, x, out);
  return out;
}

// cuDNN's filter (Cout, KH, KW, Cin) of storage T = w (KH*KW*Cin, Cout) transposed: from the
// weights' bf16 copy when T is bf16 and there is one (bits moved, not rounded), else from w.
template <class T>
void stage_weights(const Conv2dShape& s, const float* w, const uint16_t* w_bf16, T* wc) {
  const int64_t k = static_cast<int64_t>(s.kh) * s.kw * s.c_in;
  if constexpr (sizeof(T) == 2) {
    if (w_bf16) return transpose<uint16_t, T, false>(k, s.c_out, w_bf16, wc);
  }
  transpose<float, T, false>(k, s.c_out, w, wc);
}

// T: the storage cuDNN reads and writes (float, or bf16 bits); A: the activations' (x, y,
// the residual, dy, dx), float or, for bf16 activations, bf16 bits (then T is too).
// w_bf16: the weights' bf16 copy (engine/weight_copy.h), or null.
template <class T, class A>
void forward(const Conv2dShape& s, const Plan& p, const A* x, const float* w, const float* b,
             A* y, float* workspace, const float* per_sample, const A* residual,
             const uint16_t* w_bf16) {
  constexpr bool kBf16 = sizeof(T) == 2;
  const Layout l = layout<T>(s, p);
  const void* xc = staged_input(s, p, x, at<T>(workspace, l.x));
  T* wc = at<T>(workspace, l.w);
  stage_weights(s, w, w_bf16, wc);
  T* yc = kBf16 ? at<T>(workspace, l.y) : reinterpret_cast<T*>(y);
  const float one = 1.0f, zero = 0.0f;
  DDPM_CUDNN(cudnnConvolutionForward(handle(), &one, p.x, xc, p.w, wc, p.conv, p.fwd,
                                     library_workspace(workspace, l, p.fwd_bytes), p.fwd_bytes,
                                     &zero, p.y, yc));
  const int64_t pixels = s.out_h() * s.out_w(), m = s.n * pixels;
  if (kBf16 || b || per_sample || residual)  // the adds, and bf16's copy out (row_adds.cuh)
    add_to_rows(m, s.c_out, pixels, yc, b, per_sample, residual, y);
}

template <class T, class A>
void backward(const Conv2dShape& s, const Plan& p, const A* x, const float* w, const A* dy,
              A* dx, float* dw, float* workspace, const uint16_t* w_bf16, GradWrite dx_write,
              GradWrite dw_write) {
  constexpr bool kBf16 = sizeof(T) == 2;
  const Layout l = layout<T>(s, p);
  const int64_t k = static_cast<int64_t>(s.kh) * s.kw * s.c_in;
  const void* dyc = dy;
  if constexpr (kBf16 && std::is_same_v<A, float>) {  // dy's bf16 copy
    uint16_t* out = at<uint16_t>(workspace, l.dy);
    to_bf16_bits(s.n * s.out_h() * s.out_w() * s.c_out, dy, out);  // elementwise.cuh
    dyc = out;
  }
  const float one = 1.0f, zero = 0.0f;
  if (dx) {
    T* wc = at<T>(workspace, l.w);
    stage_weights(s, w, w_bf16, wc);
    // Into dx directly (cuDNN accumulates, beta 1: rounded once, into bf16 dx too; or
    // overwrites, beta 0) when x is not staged; else into the staged input's gradient,
    // cropped and added onto (or written into) dx.
    const bool direct = !stages<T, A>(p);
    T* dxc = direct ? reinterpret_cast<T*>(dx) : at<T>(workspace, l.dx);
    const bool add = dx_write == GradWrite::Accumulate;
    DDPM_CUDNN(cudnnConvolutionBackwardData(handle(), &one, p.w, wc, p.y, dyc, p.conv, p.data,
                                            library_workspace(workspace, l, p.data_bytes),
                                            p.data_bytes, direct && add ? &one : &zero, p.x,
                                            dxc));
    if (!direct)
      DDPM_LAUNCH((crop_accumulate_kernel<T, A>), grid_for(s.n * s.h * s.w * s.c_in), kThreads)(
          s, p.in_h, p.in_w, p.top, p.left, dxc, dx, add);
  }
  if (dw) {
    const void* xc = staged_input(s, p, x, at<T>(workspace, l.x));
    T* dwc = at<T>(workspace, l.dw);  // (Cout, KH, KW, Cin)
    DDPM_CUDNN(cudnnConvolutionBackwardFilter(handle(), &one, p.x, xc, p.y, dyc, p.conv, p.filter,
                                              library_workspace(workspace, l, p.filter_bytes),
                                              p.filter_bytes, &zero, p.w, dwc));
    if (dw_write == GradWrite::Accumulate)
      transpose<T, float, true>(s.c_out, k, dwc, dw);  // dw (K, Cout) += its transpose
    else
      transpose<T, float, false>(s.c_out, k, dwc, dw);  // dw = its transpose
  }
}

}  // namespace

bool conv2d_cudnn_supported(const Conv2dShape& s, CudnnMath math) {
  return plan(s, math).supported;
}

int64_t conv2d_cudnn_forward_workspace(const Conv2dShape& s, CudnnMath math) {
  const Plan& p = supported_plan(s, math);
  return math == CudnnMath::Bf16 ? layout<uint16_t>(s, p).total : layout<float>(s, p).total;
}

int64_t conv2d_cudnn_backward_workspace(const Conv2dShape& s, CudnnMath math) {
  return conv2d_cudnn_forward_workspace(s, math);  // one layout serves both directions
}

void conv2d_cudnn_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                          float* y, CudnnMath math, float* workspace, const float* per_sample,
                          const float* residual, const uint16_t* w_bf16) {
  const Plan& p = supported_plan(s, math);
  if (math == CudnnMath::Bf16)
    forward<uint16_t>(s, p, x, w, b, y, workspace, per_sample, residual, w_bf16);
  else
    forward<float>(s, p, x, w, b, y, workspace, per_sample, residual, w_bf16);
}

void conv2d_cudnn_forward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const float* b, uint16_t* y, float* workspace, const float* per_sample,
                          const uint16_t* residual, const uint16_t* w_bf16) {
  forward<uint16_t>(s, supported_plan(s, CudnnMath::Bf16), x, w, b, y, workspace, per_sample,
                    residual, w_bf16);
}

void conv2d_cudnn_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                           float* dx, float* dw, CudnnMath math, float* workspace,
                           const uint16_t* w_bf16, GradWrite dx_write, GradWrite dw_write) {
  if (!dx && !dw) return;
  const Plan& p = supported_plan(s, math);
  if (math == CudnnMath::Bf16)
    backward<uint16_t>(s, p, x, w, dy, dx, dw, workspace, w_bf16, dx_write, dw_write);
  else
    backward<float>(s, p, x, w, dy, dx, dw, workspace, w_bf16, dx_write, dw_write);
}

void conv2d_cudnn_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                           const uint16_t* dy, uint16_t* dx, float* dw, float* workspace,
                           const uint16_t* w_bf16, GradWrite dx_write, GradWrite dw_write) {
  if (!dx && !dw) return;
  backward<uint16_t>(s, supported_plan(s, CudnnMath::Bf16), x, w, dy, dx, dw, workspace, w_bf16,
                     dx_write, dw_write);
}

}  // namespace ddpm::cuda
