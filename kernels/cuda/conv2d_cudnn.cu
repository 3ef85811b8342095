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
// Which algorithm cuDNN runs per shape and pass (its heuristics' pick, or the fastest of its
// deterministic algorithms under cuda_autotune), the library and the handle: the plans of
// conv2d_cudnn_plan.cuh.
#include <cudnn.h>

#include <algorithm>
#include <type_traits>

#include "engine/check.h"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/conv2d_cudnn_plan.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/row_adds.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

using cudnn_detail::handle;
using cudnn_detail::Plan;
using cudnn_detail::supported_plan;

namespace {

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
  return cudnn_detail::plan(s, math).supported;
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
