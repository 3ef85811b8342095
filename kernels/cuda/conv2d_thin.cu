// Convolutions with few output channels (at most 8): direct kernels on the CUDA cores, for
// the bf16 convolution's forward, dgrad and wgrad (conv2d_bf16.cu hands them these shapes).
//
// Why not the implicit GEMM. The U-Net's last convolution maps 128 channels to the image's 3.
// As v4's GEMMs (conv2d_bf16.cu's table) its forward is N*H*W x 3 with K = 9*128 and its
// wgrad 1152 x 3 with K = N*H*W: a block tile is 128 columns wide (v4's large tiles, v5's;
// 64 in v4's small ones), so 3 of every 128 products the tensor cores make are used, and a
// block's fixed costs (its first loads, its epilogue) are paid for 3 outputs a row. On an
// H200 (docs/gpu-report.md, 2026-12-04) v4 ran these passes at 0.46-0.70x of cuDNN bf16, and
// cuDNN itself took 0.07-0.10 ms a pass, where reading x once (33.5 MB of bf16 at batch 128)
// takes ~7 us. The work is small: 0.45 G multiply-adds a pass, which the fp32 cores (an
// H200's 132 SMs x 128 lanes) run at their full rate in ~14 us. So these kernels use the
// CUDA cores, and are written so that memory and shared memory keep up with them.
//
// The work, in all three kernels. A thread owns one 16-byte chunk of 8 input channels
// (chunk = thread % C8, C8 = Cin / 8) of some pixels; consecutive threads take consecutive
// chunks of a pixel, so a warp reads or writes whole rows of x or dx (coalesced). Output
// channels are padded to kC = 4 or 8 with zero weights (3 -> 4: a third more multiply-adds
// than needed, none of them loads), so a thread's weights for one tap are 8 x kC floats.
//  forward  y[p][co] = sum over taps and ci of x[p's window at the tap][ci] w[tap][ci][co].
//           Thread (chunk, row) sums its chunk's channels for kPixels pixels (row, row + R,
//           ...; R = 256 / C8 pixels a block takes at once), reading its 8 x kC weights of a
//           tap into registers once for all of them. The chunks' partial sums then meet in
//           shared memory and are added in chunk order; the epilogue adds the bias, the
//           per-sample vector and the residual in fp32 (v4's order) and stores once.
//  dgrad    dx[q][ci] = sum over taps and co of dy[the output pixel that reads q through the
//           tap][co] w[tap][ci][co]. Thread (chunk, row) owns its 8 channels of kPixels dx
//           pixels outright: nothing to meet. dy's few values a pixel are the same address
//           for the C8 threads of that pixel (one transaction).
//  wgrad    dw[tap][ci][co] = sum over output pixels p of x[p's window at the tap][ci]
//           dy[p][co]. A block per (slice of pixels, tap); thread (chunk, stream) walks its
//           stream's run of consecutive pixels (coordinates advanced with a carry, no
//           division per pixel); the streams meet in shared memory, added in stream order,
//           one plane per slice; a second kernel adds the planes in slice order. Every sum
//           has a fixed order: the same bits run after run.
// Shared memory: the weights as [tap][chunk][8 x kC + 4 floats]; the 4 floats of padding
// put the 8 lanes of each phase of a 16-byte read (lanes of consecutive chunks) in different
// banks, where 8 x kC floats a chunk (128 or 256 bytes) would put them all in the same four.
//
// Numbers: as v4, x, w and dy are rounded to bf16 as they are read (nothing to do for bf16
// activations and the weights' bf16 copy), their products are exact in fp32 and the sums are
// fp32: the result is v4's up to the order of the sums.
//
// What is predicted (nothing here has run on a GPU yet): each pass in the tens of
// microseconds at the U-Net's last layer, batch 128, where v4 took 0.11-0.15 ms. The
// forward issues per tap and pixel one 16-byte load, 8 conversions and 8 x kC FMAs (~70% of
// the issue slots FMAs), 131072 pixels x 9 taps x 16 chunks / 32 lanes: ~27 M warp
// instructions, ~26 us at an H200's issue rate; the dgrad and the wgrad about the same.
// kernel-bench conv's "direct (few outputs)" rows measure it against v4 and cuDNN.
#include "kernels/cuda/conv2d_thin.cuh"

#include <algorithm>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

constexpr int kBlock = 256;  // threads: a pixel's chunks (up to 256 of them) in one block
constexpr int kChunk = kRun;  // input channels a thread owns: one 16-byte load_run of bf16
// The pixels a thread takes per tap in the forward and the dgrad: 4 for kC = 4, 2 for kC = 8.
// Its registers then hold its weights (8 x kC), its sums (kPixels x kC in the forward,
// kPixels x 8 channels in the dgrad: 16 or 32) and three coordinates a pixel, under the 128
// two blocks an SM allow (the launch bounds; ptxas, sm_90: 77-126, no spills, which
// tests/cli/no_spills.sh holds). Twice as many pixels spilled (8 x 4 sums and 8 x 3
// coordinates beside 32 weights), where the weights' reads they would save are a sixth of
// the loop's instructions.
template <int kC>
constexpr int kTapPixels = 16 / kC;
// A wgrad stream walks 128 pixels: at batch 128 on the 32x32 layer, 64 slices of 16 streams
// per tap, 576 blocks; fewer pixels a stream would mean more planes to add.
constexpr int kStreamPixels = 128;
constexpr int kShared = 48 * 1024;  // bytes a block may use without opting in

// Floats per chunk of a tap's weights in shared memory: 8 x kC and 4 of padding (above).
template <int kC>
__host__ __device__ constexpr int chunk_stride() {
  return kChunk * kC + 4;
}

__host__ __device__ int64_t taps(const Conv2dShape& s) { return int64_t{s.kh} * s.kw; }
int chunks(const Conv2dShape& s) { return static_cast<int>(s.c_in / kChunk); }
int rows_of(const Conv2dShape& s) { return kBlock / chunks(s); }  // pixels a block holds at once
int padded_outputs(const Conv2dShape& s) { return s.c_out <= 4 ? 4 : 8; }

// The shared memory of the forward and the dgrad: the weights, and (forward) the partial sums
// of every thread after them, in the same space.
template <int kC>
int64_t weight_floats(const Conv2dShape& s) {
  return taps(s) * chunks(s) * chunk_stride<kC>();
}
template <int kC>
int64_t forward_shared_bytes(const Conv2dShape& s) {
  return 4 * std::max<int64_t>(weight_floats<kC>(s), int64_t{kBlock} * kTapPixels<kC> * kC);
}

__device__ __forceinline__ int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }

// Elements i .. i + 7 of a tensor as stored (storage.cuh): one 16-byte word a load or store
// when `runs` (rows_run of the tensor), else one element at a time.
template <class A>
__device__ __forceinline__ void load8(const A* p, int64_t i, bool runs, float (&v)[kChunk]) {
  if (runs) {
    load_run<kChunk>(p, i, v);
  } else {
#pragma unroll
    for (int j = 0; j < kChunk; ++j) v[j] = load(p, i + j);
  }
}
template <class A>
__device__ __forceinline__ void store8(A* p, int64_t i, bool runs, const float (&v)[kChunk]) {
  if (runs) {
    store_run<kChunk>(p, i, v);
  } else {
#pragma unroll
    for (int j = 0; j < kChunk; ++j) store(p, i + j, v[j]);
  }
}

// 8 input channels of one pixel as the products want them: bf16 values in fp32.
template <class A>
__device__ __forceinline__ void load_chunk(const A* p, int64_t i, bool runs, float (&v)[kChunk]) {
  load8(p, i, runs, v);
  if constexpr (std::is_same_v<A, float>) {
#pragma unroll
    for (int j = 0; j < kChunk; ++j) v[j] = as_stored<uint16_t>(v[j]);
  }
}
template <class A>
__device__ __forceinline__ float load_rounded(const A* p, int64_t i) {
  return std::is_same_v<A, float> ? as_stored<uint16_t>(load(p, i)) : load(p, i);
}

// Every weight, rounded to bf16, into shared memory as [tap][chunk][j][co] (kC columns, the
// padded ones zero; each chunk chunk_stride floats), then a barrier. w: (taps, Cin, Cout).
// Row tap * Cin + ci of w is (tap * C8 + chunk) * 8 + j, Cin being a multiple of 8: its
// chunk and j are a shift and a mask, no division.
template <int kC>
__device__ void stage_weights(const Conv2dShape& s, const float* w, const uint16_t* w_bf16,
                              float* ws) {
  const int n = static_cast<int>(taps(s) * s.c_in * kC);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int co = i % kC, row = i / kC;  // kC a power of two: a mask and a shift
    float v = 0.0f;
    if (co < s.c_out) {
      const int64_t at = int64_t{row} * s.c_out + co;
      v = w_bf16 ? float_from_bf16_bits(w_bf16[at]) : as_stored<uint16_t>(w[at]);
    }
    ws[row / kChunk * chunk_stride<kC>() + row % kChunk * kC + co] = v;
  }
  __syncthreads();
}

// This thread's 8 x kC weights of one tap, from shared memory into registers.
template <int kC>
__device__ __forceinline__ void tap_weights(const float* ws, int tap, int c8, int chunk,
                                            float (&wr)[kChunk][kC]) {
  const float4* at = reinterpret_cast<const float4*>(ws + (tap * c8 + chunk) * chunk_stride<kC>());
#pragma unroll
  for (int q = 0; q < kChunk * kC / 4; ++q) {
    const float4 f = at[q];
    const float four[4] = {f.x, f.y, f.z, f.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) wr[(4 * q + e) / kC][(4 * q + e) % kC] = four[e];
  }
}

// A thread's kPixels pixels of its block's run from `first` (row, row + rows, ... of maps of
// map_h x map_w, n_maps of them): each as its sample's first pixel of the other side's maps
// (n x other_map, < 2^31 by conv2d_bf16.cu's check_shape_limits) and its row and column
// mapped to y * scale + shift_y, x * scale + shift_x. A pixel past the end, or a thread past
// the block's rows, gets coordinates so far out that no tap reaches them.
template <int kPixels>
struct ThreadPixels {
  int base[kPixels], y[kPixels], x[kPixels];
  __device__ ThreadPixels(int64_t first, int row, int rows, int map_h, int map_w, int64_t n_maps,
                          int other_map, int scale, int shift_y, int shift_x) {
    const int64_t end = n_maps * map_h * map_w;
#pragma unroll
    for (int i = 0; i < kPixels; ++i) {
      const int64_t p = first + row + int64_t{i} * rows;
      base[i] = 0;
      y[i] = x[i] = -(1 << 28);
      if (row < rows && p < end) {
        const int n = static_cast<int>(p / (map_h * map_w));
        const int r = static_cast<int>(p % (map_h * map_w));
        base[i] = n * other_map;
        y[i] = r / map_w * scale + shift_y;
        x[i] = r % map_w * scale + shift_x;
      }
    }
  }
};

// ---- forward ------------------------------------------------------------------------------

// y (+ the adds), what StoreWithAdds does in conv2d_bf16.cu: ((sum + bias) + per_sample) +
// residual, fp32, one store.
template <class A>
struct ForwardOut {
  A* y;
  const float *bias, *per_sample;
  const A* residual;
  __device__ void operator()(const Conv2dShape& s, int64_t pixel, int co, float sum) const {
    const int64_t at = pixel * s.c_out + co;
    if (bias) sum += bias[co];
    if (per_sample) sum += per_sample[pixel / (s.out_h() * s.out_w()) * s.c_out + co];
    if (residual) sum += load(residual, at);
    store(y, at, sum);
  }
};

// grid: ceil(N*OH*OW / (R * kPixels)) blocks of kBlock threads; forward_shared_bytes.
// x (N, H, W, Cin), w (KH, KW, Cin, Cout) or its bf16 copy; x_runs: rows_run(Cin, x).
template <int kC, class A>
__global__ void __launch_bounds__(kBlock, 2)
thin_forward(Conv2dShape s, const A* x, bool x_runs, const float* w, const uint16_t* w_bf16,
             ForwardOut<A> out) {
  constexpr int kPixels = kTapPixels<kC>;
  DDPM_DYNAMIC_SHARED(float, smem);
  stage_weights<kC>(s, w, w_bf16, smem);
  const int c8 = static_cast<int>(s.c_in / kChunk), rows = kBlock / c8;
  const int chunk = threadIdx.x % c8, row = threadIdx.x / c8;
  const int oh_n = static_cast<int>(s.out_h()), ow_n = static_cast<int>(s.out_w());
  const int h_n = static_cast<int>(s.h), w_n = static_cast<int>(s.w);
  const int64_t pixels = s.n * oh_n * ow_n, first = int64_t{blockIdx.x} * rows * kPixels;
  // Each pixel's window: its sample's first input pixel, its top-left input coordinates
  const ThreadPixels<kPixels> window(first, row, rows, oh_n, ow_n, s.n, h_n * w_n, s.stride,
                                     -s.pad_top, -s.pad_left);
  float acc[kPixels][kC] = {};
  for (int kh = 0; kh < s.kh; ++kh) {
    for (int kw = 0; kw < s.kw; ++kw) {
      float wr[kChunk][kC];
      tap_weights<kC>(smem, kh * s.kw + kw, c8, chunk, wr);
#pragma unroll
      for (int i = 0; i < kPixels; ++i) {
        const int ih = window.y[i] + kh, iw = window.x[i] + kw;
        if (static_cast<unsigned>(ih) >= static_cast<unsigned>(h_n) ||
            static_cast<unsigned>(iw) >= static_cast<unsigned>(w_n))
          continue;
        float v[kChunk];
        load_chunk(x, (int64_t{window.base[i]} + ih * w_n + iw) * s.c_in + chunk * kChunk, x_runs,
                   v);
#pragma unroll
        for (int j = 0; j < kChunk; ++j)
#pragma unroll
          for (int co = 0; co < kC; ++co) acc[i][co] = fmaf(v[j], wr[j][co], acc[i][co]);
      }
    }
  }
  __syncthreads();  // every thread is done with the weights: their space takes the sums
  float* part = smem;  // [thread][kPixels][kC]
#pragma unroll
  for (int i = 0; i < kPixels; ++i)
#pragma unroll
    for (int co = 0; co < kC; ++co) part[(threadIdx.x * kPixels + i) * kC + co] = acc[i][co];
  __syncthreads();
  // The block's outputs (pixel first + row + i * rows, channel co), consecutive threads on
  // consecutive elements of y: the chunks' sums added in chunk order.
  const int outputs = rows * kPixels * static_cast<int>(s.c_out);
  for (int e = threadIdx.x; e < outputs; e += blockDim.x) {
    const int local = e / static_cast<int>(s.c_out), co = e % static_cast<int>(s.c_out);
    const int64_t p = first + local;
    if (p >= pixels) break;
    const int r = local % rows, i = local / rows;
    float sum = 0.0f;
    for (int ch = 0; ch < c8; ++ch) sum += part[((r * c8 + ch) * kPixels + i) * kC + co];
    out(s, p, co, sum);
  }
}

// ---- dgrad --------------------------------------------------------------------------------

// grid: ceil(N*H*W / (R * kPixels)) blocks of kBlock threads; 4 * weight_floats bytes.
// dy (N, OH, OW, Cout); dx (N, H, W, Cin), written (add false) or added to; dx_runs:
// rows_run(Cin, dx).
template <int kC, class A>
__global__ void __launch_bounds__(kBlock, 2)
thin_dgrad(Conv2dShape s, const A* dy, const float* w, const uint16_t* w_bf16, A* dx, bool add,
           bool dx_runs) {
  constexpr int kDgradPixels = kTapPixels<kC>;
  DDPM_DYNAMIC_SHARED(float, smem);
  stage_weights<kC>(s, w, w_bf16, smem);
  const int c8 = static_cast<int>(s.c_in / kChunk), rows = kBlock / c8;
  const int chunk = threadIdx.x % c8, row = threadIdx.x / c8;
  const int oh_n = static_cast<int>(s.out_h()), ow_n = static_cast<int>(s.out_w());
  const int h_n = static_cast<int>(s.h), w_n = static_cast<int>(s.w), stride = s.stride;
  const int64_t pixels = s.n * h_n * w_n, first = int64_t{blockIdx.x} * rows * kDgradPixels;
  // Each dx pixel: its sample's first dy pixel, and (h + pad_top, w + pad_left): tap (kh, kw)
  // reads it from output pixel ((h + pad_top - kh) / stride, ...) when that divides and lands.
  const ThreadPixels<kDgradPixels> padded(first, row, rows, h_n, w_n, s.n, oh_n * ow_n, 1,
                                          s.pad_top, s.pad_left);
  float acc[kDgradPixels][kChunk] = {};
  for (int kh = 0; kh < s.kh; ++kh) {
    for (int kw = 0; kw < s.kw; ++kw) {
      float wr[kChunk][kC];
      tap_weights<kC>(smem, kh * s.kw + kw, c8, chunk, wr);
#pragma unroll
      for (int i = 0; i < kDgradPixels; ++i) {
        int oh = padded.y[i] - kh, ow = padded.x[i] - kw;
        if (oh < 0 || ow < 0) continue;
        if (stride != 1) {  // uniform: the shape's
          if (oh % stride != 0 || ow % stride != 0) continue;
          oh /= stride;
          ow /= stride;
        }
        if (oh >= oh_n || ow >= ow_n) continue;
        const int64_t at = (int64_t{padded.base[i]} + oh * ow_n + ow) * s.c_out;
        float d[kC];
#pragma unroll
        for (int co = 0; co < kC; ++co) d[co] = co < s.c_out ? load_rounded(dy, at + co) : 0.0f;
#pragma unroll
        for (int j = 0; j < kChunk; ++j)
#pragma unroll
          for (int co = 0; co < kC; ++co) acc[i][j] = fmaf(d[co], wr[j][co], acc[i][j]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kDgradPixels; ++i) {
    const int64_t q = first + row + int64_t{i} * rows;
    if (row >= rows || q >= pixels) continue;
    const int64_t at = q * s.c_in + chunk * kChunk;
    float v[kChunk];
    if (add) {
      load8(dx, at, dx_runs, v);
#pragma unroll
      for (int j = 0; j < kChunk; ++j) v[j] += acc[i][j];
    } else {
#pragma unroll
      for (int j = 0; j < kChunk; ++j) v[j] = acc[i][j];
    }
    store8(dx, at, dx_runs, v);
  }
}

// ---- wgrad --------------------------------------------------------------------------------

struct WgradPlan {
  int64_t slice_pixels, slices;
};
WgradPlan wgrad_plan(const Conv2dShape& s) {
  const int64_t pixels = s.n * s.out_h() * s.out_w();
  const int64_t slice = int64_t{rows_of(s)} * kStreamPixels;
  return {slice, std::max<int64_t>(1, (pixels + slice - 1) / slice)};
}

// grid (slices, taps) of kBlock threads, kBlock * kChunk * 4 floats of shared memory.
// Block (slice, tap) writes planes[slice][tap][ci][kC], its slice's sum for that tap.
template <int kC, class A>
__global__ void __launch_bounds__(kBlock, 2)
thin_wgrad(Conv2dShape s, const A* x, bool x_runs, const A* dy, int64_t slice_pixels,
           float* planes) {
  DDPM_DYNAMIC_SHARED(float, part);  // [thread][8][4]: the sums of 4 output channels at once
  const int c8 = static_cast<int>(s.c_in / kChunk), rows = kBlock / c8;
  const int chunk = threadIdx.x % c8, stream = threadIdx.x / c8;
  const int tap = blockIdx.y, kh = tap / s.kw, kw = tap % s.kw;
  const int oh_n = static_cast<int>(s.out_h()), ow_n = static_cast<int>(s.out_w());
  const int h_n = static_cast<int>(s.h), w_n = static_cast<int>(s.w);
  const int64_t pixels = s.n * oh_n * ow_n;
  // The stream's run: [begin, end) of the slice's pixels, consecutive.
  const int64_t slice_begin = int64_t{blockIdx.x} * slice_pixels;
  const int64_t slice_end = min_of(pixels, slice_begin + slice_pixels);
  const int64_t run = (slice_end - slice_begin + rows - 1) / rows;
  const int64_t begin = min_of(slice_end, slice_begin + stream * run);
  const int64_t end = stream < rows ? min_of(slice_end, begin + run) : begin;
  float acc[kChunk][kC] = {};
  if (begin < end) {
    int n = static_cast<int>(begin / (oh_n * ow_n)), r = static_cast<int>(begin % (oh_n * ow_n));
    int oh = r / ow_n, ow = r % ow_n;
    for (int64_t p = begin; p < end; ++p) {
      const int ih = oh * s.stride - s.pad_top + kh, iw = ow * s.stride - s.pad_left + kw;
      if (static_cast<unsigned>(ih) < static_cast<unsigned>(h_n) &&
          static_cast<unsigned>(iw) < static_cast<unsigned>(w_n)) {
        float v[kChunk], d[kC];
        load_chunk(x, ((int64_t{n} * h_n + ih) * w_n + iw) * s.c_in + chunk * kChunk, x_runs, v);
#pragma unroll
        for (int co = 0; co < kC; ++co)
          d[co] = co < s.c_out ? load_rounded(dy, p * s.c_out + co) : 0.0f;
#pragma unroll
        for (int j = 0; j < kChunk; ++j)
#pragma unroll
          for (int co = 0; co < kC; ++co) acc[j][co] = fmaf(v[j], d[co], acc[j][co]);
      }
      if (++ow == ow_n) {  // the next pixel, with a carry
        ow = 0;
        if (++oh == oh_n) {
          oh = 0;
          ++n;
        }
      }
    }
  }
  // The streams meet, 4 output channels at a time (kC = 8 would need 64 KB at once): thread
  // e of the block adds element e of the tap's (ci, co) sums over the streams in order.
  float* plane = planes + (int64_t{blockIdx.x} * taps(s) + tap) * s.c_in * kC;
#pragma unroll
  for (int c0 = 0; c0 < kC; c0 += 4) {
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) part[(threadIdx.x * kChunk + j) * 4 + c] = acc[j][c0 + c];
    __syncthreads();
    for (int e = threadIdx.x; e < s.c_in * 4; e += blockDim.x) {  // e = ci * 4 + c
      const int ch = e / (kChunk * 4), jc = e % (kChunk * 4);
      float sum = 0.0f;
      for (int st = 0; st < rows; ++st) sum += part[(st * c8 + ch) * kChunk * 4 + jc];
      plane[e / 4 * kC + c0 + e % 4] = sum;
    }
    __syncthreads();  // read before the next four channels overwrite
  }
}

// dw[tap][ci][co] (=, or +=) the sum over slices, in slice order, of planes[.][tap][ci][co].
__global__ void thin_wgrad_planes(int64_t slices, int64_t taps_cin, int64_t c_out, int kC,
                                  const float* planes, float* dw, bool add) {
  DDPM_GRID_STRIDE(i, taps_cin * c_out) {
    const int64_t tc = i / c_out, co = i % c_out;
    float sum = 0.0f;
    for (int64_t z = 0; z < slices; ++z) sum += planes[(z * taps_cin + tc) * kC + co];
    dw[i] = add ? dw[i] + sum : sum;
  }
}

// f(std::integral_constant<int, kC>) with kC the shape's output channels padded to 4 or 8.
template <class F>
void with_padded_outputs(const Conv2dShape& s, F f) {
  if (padded_outputs(s) == 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

template <class A>
void forward(const Conv2dShape& s, const A* x, const float* w, const uint16_t* w_bf16,
             const float* b, const float* per_sample, const A* residual, A* y) {
  CHECK(conv2d_thin_applies(s), "conv2d_thin_forward: a shape it does not take");
  const int64_t pixels = s.n * s.out_h() * s.out_w();
  if (pixels == 0) return;
  with_padded_outputs(s, [&](auto c) {
    constexpr int kC = decltype(c)::value;
    const int64_t per_block = int64_t{rows_of(s)} * kTapPixels<kC>;
    const auto grid = static_cast<unsigned>((pixels + per_block - 1) / per_block);
    DDPM_LAUNCH((thin_forward<kC, A>), grid, kBlock, forward_shared_bytes<kC>(s))(
        s, x, rows_run(s.c_in, x), w, w_bf16, ForwardOut<A>{y, b, per_sample, residual});
  });
}

template <class A>
void backward(const Conv2dShape& s, const A* x, const float* w, const uint16_t* w_bf16,
              const A* dy, A* dx, float* dw, float* workspace, GradWrite dx_write,
              GradWrite dw_write) {
  CHECK(conv2d_thin_applies(s), "conv2d_thin_backward: a shape it does not take");
  with_padded_outputs(s, [&](auto c) {
    constexpr int kC = decltype(c)::value;
    const int64_t dx_pixels = s.n * s.h * s.w;
    if (dx && dx_pixels > 0) {
      const int64_t per_block = int64_t{rows_of(s)} * kTapPixels<kC>;
      const auto grid = static_cast<unsigned>((dx_pixels + per_block - 1) / per_block);
      DDPM_LAUNCH((thin_dgrad<kC, A>), grid, kBlock, 4 * weight_floats<kC>(s))(
          s, dy, w, w_bf16, dx, dx_write == GradWrite::Accumulate, rows_run(s.c_in, dx));
    }
    if (dw) {  // no pixels (an empty batch): zero planes, so dw = 0 or dw += 0, as v4's
      CHECK(workspace != nullptr,
            "the direct convolution's wgrad needs conv2d_thin_backward_workspace floats");
      const WgradPlan plan = wgrad_plan(s);
      DDPM_LAUNCH((thin_wgrad<kC, A>),
                  dim3(static_cast<unsigned>(plan.slices), static_cast<unsigned>(taps(s))),
                  kBlock, kBlock * kChunk * 4 * sizeof(float))(
          s, x, rows_run(s.c_in, x), dy, plan.slice_pixels, workspace);
      DDPM_LAUNCH(thin_wgrad_planes, grid_for(taps(s) * s.c_in * s.c_out), kThreads)(
          plan.slices, taps(s) * s.c_in, s.c_out, kC, workspace, dw,
          dw_write == GradWrite::Accumulate);
    }
  });
}

}  // namespace

bool conv2d_thin_applies(const Conv2dShape& s) {
  if (s.c_out < 1 || s.c_out > kThinMaxOutputChannels || s.c_in < kChunk ||
      s.c_in % kChunk != 0 || s.c_in / kChunk > kBlock)
    return false;
  const int64_t weights =
      padded_outputs(s) == 4 ? 4 * weight_floats<4>(s) : 4 * weight_floats<8>(s);
  return weights <= kShared;
}

int64_t conv2d_thin_backward_workspace(const Conv2dShape& s) {
  return wgrad_plan(s).slices * taps(s) * s.c_in * padded_outputs(s);
}

void conv2d_thin_forward(const Conv2dShape& s, const float* x, const float* w,
                         const uint16_t* w_bf16, const float* b, const float* per_sample,
                         const float* residual, float* y) {
  forward(s, x, w, w_bf16, b, per_sample, residual, y);
}
void conv2d_thin_forward(const Conv2dShape& s, const uint16_t* x, const float* w,
                         const uint16_t* w_bf16, const float* b, const float* per_sample,
                         const uint16_t* residual, uint16_t* y) {
  forward(s, x, w, w_bf16, b, per_sample, residual, y);
}
void conv2d_thin_backward(const Conv2dShape& s, const float* x, const float* w,
                          const uint16_t* w_bf16, const float* dy, float* dx, float* dw,
                          float* workspace, GradWrite dx_write, GradWrite dw_write) {
  backward(s, x, w, w_bf16, dy, dx, dw, workspace, dx_write, dw_write);
}
void conv2d_thin_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const uint16_t* w_bf16, const uint16_t* dy, uint16_t* dx, float* dw,
                          float* workspace, GradWrite dx_write, GradWrite dw_write) {
  backward(s, x, w, w_bf16, dy, dx, dw, workspace, dx_write, dw_write);
}

}  // namespace ddpm::cuda
