// 2-D convolution on the GPU as implicit GEMM.
//
// A convolution is a matrix product whose operands are never materialised:
//   forward  y (M x Cout)   = A (M x K)      * W (K x Cout)     M = N*OH*OW, K = KH*KW*Cin
//            A[m, k] = x[n, oh*s - pt + kh, ow*s - pl + kw, ci]  (0 outside the image)
//   dgrad    dx (M' x Cin)  = A' (M' x K')   * B' (K' x Cin)    M' = N*H*W,  K' = KH*KW*Cout
//            A'[m', k'] = dy[n, oh, ow, co] where ih = oh*s - pt + kh (0 if no such oh)
//            B'[k', ci] = w[kh, kw, ci, co]
//   wgrad    dw (K x Cout)  = A^T (K x M)    * dy (M x Cout)
// NHWC makes k = (kh, kw, ci) and (kh, kw, co) run over contiguous channels, and the weight
// layout (KH, KW, Cin, Cout) makes W a plain row-major (K x Cout) matrix.
//
// So there is one GEMM kernel per version, parameterised by two "loaders" that compute an
// operand element from its (row, col) index; the three passes differ only in their loaders.
//   v1 naive: one thread per C element, a dot product over K through the loaders. Correct
//             and readable; every operand element is re-read from global memory by every
//             thread that needs it (no reuse), so it runs at a small fraction of peak.
//   v2 tiled: a block computes a 64x64 tile of C with 256 threads, each owning a 4x4 grid
//             of outputs. The K loop stages a 64x8 tile of A and an 8x64 tile of B in shared
//             memory, so each loaded element is reused 64 times from shared memory and 4
//             times from registers. Loads coalesce: consecutive threads read consecutive
//             addresses of each operand (its loader says which index runs along memory:
//             channels, for all but the dgrad's B). Then the same loop on 128x128
//             tiles, 8x8 outputs a thread: each staged element and each shared-memory read
//             feeds twice the products, so the gathers' index arithmetic and the reads are
//             spread over 4 times the FFMA (kernels/conv2d_tiled_layout.h: who stages and
//             owns what; gemm_tiled below: the two stages that overlap loads and products).
//   v3 tensor cores: v2's tiling with the products on tensor cores in TF32 (WMMA), in
//             conv2d_tensor_core.cuh; same loaders, same split-K; ~1e-3 relative rounding.
//             (v4, conv2d_bf16.cu, is the fast one, in bf16; conv2d_tf32.cu runs the
//             same TF32 numbers as v3 on it.)
//   split-K (v2 and v3, when the output tiles alone cannot fill the GPU): wgrad multiplies over
//             K = N*OH*OW (16k-130k terms at batch 128) into an output of only
//             (KH*KW*Cin) x Cout, e.g. 18 x 2 = 36 tiles of 64x64 for a 128-channel layer on
//             a 132-SM H100. The K range is then cut into `splits` equal slices, blockIdx.z
//             computes its slice's partial product into workspace[z] (m x n), and
//             reduce_splits adds the slices to C in slice order.
// All sum each output in a fixed order (split-K included: no atomics): deterministic.
// Backward passes accumulate (+=) into dx and dw, the tape's convention (dx = when it is
// the first contribution: kernels/grad_write.h).
// What limits v2: fp32 FMA throughput (no tensor cores), its shared-memory reads, and the
// index arithmetic of the gather. The loaders' divisions by the shape are multiplies by
// magic numbers (FastDivide), each element's index is split in two halves, the row's
// taken once for the K loop and the column's once a K step (the loaders, below), and a
// thread's share of a tile is one 16-byte run along memory where the channels allow: a
// forward K step of 8 on 64x64 tiles is 223 SASS instructions for 128 FFMA, where 64-bit
// divides made it up to 1531; on 128x128 tiles, 623 for 512 FFMA (docs/kernels.md). A
// production kernel steps the indices per tile and masks the taps instead (v4).
#include <algorithm>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/conv2d_autotune.cuh"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/conv2d_pieces.cuh"
#include "kernels/cuda/conv2d_tensor_core.cuh"
#include "kernels/cuda/conv2d_tf32.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/conv2d_tiled_layout.h"
#include "kernels/fast_divide.h"

namespace ddpm::cuda {

namespace {

// ---- loaders: operand element (row, col), called only for in-range indices ----
// Each says which of its indices runs along memory (kColumnsContiguous: the column index),
// so that the tiled kernel's threads walk that one (kernels/conv2d_tiled_layout.h).
// A row or column index splits into (image, row, column) or (tap, channel) by divisions by
// the shape, fixed for the launch: FastDivide (kernels/fast_divide.h) does each with one
// multiply and a shift where 64-bit divides took ~70 instructions apiece, most of what a
// v2 thread executed per product (check_index_limits: indices below 2^31).
// An element is taken in two halves: row(r) does what depends on the row alone, col(c)
// what depends on the column alone, at(row(r), col(c), ok) the rest: the bounds, the
// address and the load (ok false, for an element past the matrix, reads 0). v2
// (gemm_tiled) takes each half once where it can: a thread's rows are the same for the
// whole K loop, and its elements walked along k share their column. v1 and v3 call
// operator()(r, c), the three in a row. The halves' arithmetic is unsigned, so that a half
// taken for an index past the matrix (v2 takes them before it knows) wraps, not overflows;
// such an element is never loaded. The index of a pixel of the batch (below 2^31) is taken
// in 32 bits, and only the address in 64.

// A divisor of the shape; an empty extent (then nothing is loaded) divides by 1.
FastDivide by(int64_t extent) { return FastDivide(std::max<int64_t>(extent, 1)); }

// An unsigned coordinate is inside [0, extent) in one compare: a negative one wraps past it.
__device__ bool inside(uint32_t coordinate, uint32_t extent) { return coordinate < extent; }

// p[i] where ok, else 0 without reading p: every test of an element is folded into ok, so
// that its load sits under one predicate (a load made either way, from p[0] where not ok,
// took more instructions: docs/kernels.md).
__device__ float load(const float* p, bool ok, int64_t i) { return ok ? p[i] : 0.0f; }

// p[i .. i + V) where ok, else zeros: one 16-byte (V = 4) or 8-byte (V = 2) load, for v2's
// walks in runs. p + i is V floats aligned: the loader's runs_of(V) said so on the host.
template <int V>
__device__ void load_run(const float* p, bool ok, int64_t i, float (&out)[V]) {
  static_assert(V == 2 || V == 4, "runs of 2 or 4 floats");
  if (V == 4) {
    const float4 v = ok ? *reinterpret_cast<const float4*>(p + i) : make_float4(0, 0, 0, 0);
    out[0] = v.x, out[1] = v.y, out[V / 2] = v.z, out[V - 1] = v.w;
  } else {
    const float2 v = ok ? *reinterpret_cast<const float2*>(p + i) : make_float2(0, 0);
    out[0] = v.x, out[V - 1] = v.y;
  }
}

// Whether p's runs of v floats from offsets that are multiples of v are aligned loads.
bool aligned_runs(const void* p, int v) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(float) * v) == 0;
}

// A[m, k] of the forward pass (also A^T of wgrad).
struct Im2col {
  static constexpr bool kColumnsContiguous = true;  // k: a pixel's channels
  Conv2dShape s;
  FastDivide by_c_in, by_kw, by_ow, by_oh;
  uint32_t h, w;
  const float* x;  // (N, H, W, Cin)
  Im2col(const Conv2dShape& s_, const float* x_)
      : s(s_), by_c_in(by(s_.c_in)), by_kw(by(s_.kw)), by_ow(by(s_.out_w())),
        by_oh(by(s_.out_h())), h(static_cast<uint32_t>(s_.h)), w(static_cast<uint32_t>(s_.w)),
        x(x_) {}
  // Output pixel m = (n, oh, ow): the input pixel under its window's tap (0, 0), (ih0, iw0),
  // and that pixel's index in the batch, (n H + ih0) W + iw0 (both wrap where they fall in
  // the padding).
  struct Row {
    uint32_t ih0, iw0, pixel0;
  };
  // k = (kh, kw, ci), and the tap's pixel offset kh W + kw.
  struct Col {
    uint32_t kh, kw, ci, pixel;
  };
  __device__ Row row(int64_t m) const {
    const Split3 out = split3(static_cast<uint32_t>(m), by_ow, by_oh);  // (n, oh, ow)
    const uint32_t ih0 = out.middle * s.stride - s.pad_top;
    const uint32_t iw0 = out.inner * s.stride - s.pad_left;
    return {ih0, iw0, (out.outer * h + ih0) * w + iw0};
  }
  __device__ Col col(int64_t k) const {
    const Split3 tap = split3(static_cast<uint32_t>(k), by_c_in, by_kw);  // (kh, kw, ci)
    return {tap.outer, tap.middle, tap.inner, tap.outer * w + tap.middle};
  }
  // Whether the tap lands inside the image, and where.
  __device__ bool lands(const Row& r, const Col& c) const {
    return inside(r.ih0 + c.kh, h) && inside(r.iw0 + c.kw, w);
  }
  __device__ int64_t offset(const Row& r, const Col& c) const {
    return int64_t{r.pixel0 + c.pixel} * s.c_in + c.ci;
  }
  __device__ float at(const Row& r, const Col& c, bool ok) const {
    return load(x, ok && lands(r, c), offset(r, c));
  }
  __device__ float operator()(int64_t m, int64_t k) const { return at(row(m), col(k), true); }
  // Runs along k (a pixel's channels): whole within a tap, and aligned, where Cin is a
  // multiple of the run.
  bool runs_of(int v) const { return s.c_in % v == 0 && aligned_runs(x, v); }
  template <int V>
  __device__ void run(const Row& r, const Col& c, bool ok, float (&out)[V]) const {
    load_run(x, ok && lands(r, c), offset(r, c), out);
  }
};

// The transpose of a loader: (row, col) -> inner(col, row).
template <class Inner>
struct Transposed {
  static constexpr bool kColumnsContiguous = !Inner::kColumnsContiguous;
  Inner inner;
  using Row = typename Inner::Col;
  using Col = typename Inner::Row;
  __device__ Row row(int64_t r) const { return inner.col(r); }
  __device__ Col col(int64_t c) const { return inner.row(c); }
  __device__ float at(const Row& r, const Col& c, bool ok) const { return inner.at(c, r, ok); }
  __device__ float operator()(int64_t r, int64_t c) const { return inner(c, r); }
  bool runs_of(int v) const { return inner.runs_of(v); }
  template <int V>
  __device__ void run(const Row& r, const Col& c, bool ok, float (&out)[V]) const {
    inner.run(c, r, ok, out);
  }
};

// A plain row-major matrix.
struct Dense {
  static constexpr bool kColumnsContiguous = true;
  const float* p;
  int64_t ld;
  struct Row {
    int64_t offset;  // r ld
  };
  struct Col {
    int64_t c;
  };
  __device__ Row row(int64_t r) const { return {r * ld}; }
  __device__ Col col(int64_t c) const { return {c}; }
  __device__ float at(const Row& r, const Col& c, bool ok) const {
    return load(p, ok, r.offset + c.c);
  }
  __device__ float operator()(int64_t r, int64_t c) const { return at(row(r), col(c), true); }
  // Runs along a row.
  bool runs_of(int v) const { return ld % v == 0 && aligned_runs(p, v); }
  template <int V>
  __device__ void run(const Row& r, const Col& c, bool ok, float (&out)[V]) const {
    load_run(p, ok, r.offset + c.c, out);
  }
};

// A'[m', k'] of dgrad: the output gradient that input pixel m' received through tap k'.
struct DgradA {
  static constexpr bool kColumnsContiguous = true;  // k': a pixel's channels of dy
  Conv2dShape s;
  uint32_t oh_n, ow_n;
  FastDivide by_c_out, by_kw, by_w, by_h, by_stride;
  const float* dy;  // (N, OH, OW, Cout)
  DgradA(const Conv2dShape& s_, const float* dy_)
      : s(s_), oh_n(static_cast<uint32_t>(s_.out_h())),
        ow_n(static_cast<uint32_t>(s_.out_w())), by_c_out(by(s_.c_out)), by_kw(by(s_.kw)),
        by_w(by(s_.w)), by_h(by(s_.h)), by_stride(by(s_.stride)), dy(dy_) {}
  // Input pixel m' = (n, ih, iw): (nh, nw) = (ih + pad_top, iw + pad_left), which tap
  // (kh, kw) reaches from output pixel (nh - kh, nw - kw) / stride; and the sample's first
  // output row, n OH.
  struct Row {
    uint32_t nh, nw, out0;
  };
  struct Col {
    uint32_t kh, kw, co;
  };
  __device__ Row row(int64_t m) const {
    const Split3 in = split3(static_cast<uint32_t>(m), by_w, by_h);  // (n, ih, iw)
    return {in.middle + s.pad_top, in.inner + s.pad_left, in.outer * oh_n};
  }
  __device__ Col col(int64_t k) const {
    const Split3 tap = split3(static_cast<uint32_t>(k), by_c_out, by_kw);  // (kh, kw, co)
    return {tap.outer, tap.middle, tap.inner};
  }
  // Whether tap (kh, kw) reaches input pixel r from an output pixel, (oh, ow).
  __device__ bool lands(const Row& r, const Col& c, uint32_t& oh, uint32_t& ow) const {
    // oh stride and ow stride; below 0 they wrap past every output row and column
    oh = r.nh - c.kh, ow = r.nw - c.kw;
    bool ok = true;
    if (s.stride != 1) {  // the same for the whole launch
      const QuotientRemainder qh = divide(oh, by_stride), qw = divide(ow, by_stride);
      ok = static_cast<int32_t>(oh) >= 0 && static_cast<int32_t>(ow) >= 0 && qh.r == 0 &&
           qw.r == 0;
      oh = qh.q, ow = qw.q;
    }
    return ok && inside(oh, oh_n) && inside(ow, ow_n);
  }
  __device__ int64_t offset(const Row& r, uint32_t oh, uint32_t ow, const Col& c) const {
    return int64_t{(r.out0 + oh) * ow_n + ow} * s.c_out + c.co;
  }
  __device__ float at(const Row& r, const Col& c, bool ok) const {
    uint32_t oh, ow;
    ok = ok && lands(r, c, oh, ow);
    return load(dy, ok, offset(r, oh, ow, c));
  }
  __device__ float operator()(int64_t m, int64_t k) const { return at(row(m), col(k), true); }
  // Runs along k' (an output pixel's channels of dy), where Cout is a multiple of the run.
  bool runs_of(int v) const { return s.c_out % v == 0 && aligned_runs(dy, v); }
  template <int V>
  __device__ void run(const Row& r, const Col& c, bool ok, float (&out)[V]) const {
    uint32_t oh, ow;
    ok = ok && lands(r, c, oh, ow);
    load_run(dy, ok, offset(r, oh, ow, c), out);
  }
};

// B'[k', ci] of dgrad: w[kh, kw, ci, co] for k' = (kh, kw, co).
struct DgradB {
  static constexpr bool kColumnsContiguous = false;  // rows k' = (tap, co): w's last dim
  Conv2dShape s;
  FastDivide by_c_out;
  const float* w;
  DgradB(const Conv2dShape& s_, const float* w_) : s(s_), by_c_out(by(s_.c_out)), w(w_) {}
  struct Row {
    int64_t offset;  // tap Cin Cout + co
  };
  struct Col {
    int64_t offset;  // ci Cout
  };
  __device__ Row row(int64_t k) const {
    const QuotientRemainder tap_co = divide(static_cast<uint32_t>(k), by_c_out);
    return {int64_t{tap_co.q} * s.c_in * s.c_out + tap_co.r};
  }
  __device__ Col col(int64_t ci) const { return {ci * s.c_out}; }
  __device__ float at(const Row& r, const Col& c, bool ok) const {
    return load(w, ok, r.offset + c.offset);
  }
  __device__ float operator()(int64_t k, int64_t ci) const { return at(row(k), col(ci), true); }
  // Runs along k' (a tap's output channels), where Cout is a multiple of the run.
  bool runs_of(int v) const { return s.c_out % v == 0 && aligned_runs(w, v); }
  template <int V>
  __device__ void run(const Row& r, const Col& c, bool ok, float (&out)[V]) const {
    load_run(w, ok, r.offset + c.offset, out);
  }
};

// What the loaders' 32-bit divisions take: every index they split below 2^31 (the GEMM's
// rows, the pixels of the batch in and out, and its K, taps times channels).
void check_index_limits(const Conv2dShape& s) {
  const int64_t limit = int64_t{1} << 31;
  CHECK(s.n * s.h * s.w < limit && s.n * s.out_h() * s.out_w() < limit &&
            s.taps() * std::max(s.c_in, s.c_out) < limit,
        "convolutions v1-v3 split their indices in 32 bits: batches of fewer than 2^31 pixels "
        "in and out and fewer than 2^31 taps x channels, got "
            << s.n << " x " << s.h << " x " << s.w << " x " << s.c_in << " in, " << s.out_h()
            << " x " << s.out_w() << " x " << s.c_out << " out, kernel " << s.kh << " x "
            << s.kw);
}

// ---- v1: naive ----
template <class LoadA, class LoadB>
__global__ void gemm_naive(int64_t m, int64_t n, int64_t k, LoadA a, LoadB b, const float* bias,
                           float* c, bool accumulate) {
  DDPM_GRID_STRIDE(idx, m * n) {
    const int64_t row = idx / n, col = idx % n;
    float acc = 0.0f;
    for (int64_t p = 0; p < k; ++p) acc += a(row, p) * b(p, col);
    if (accumulate) {
      c[idx] += acc;
    } else {
      c[idx] = acc + (bias ? bias[col] : 0.0f);
    }
  }
}

// ---- v2: shared-memory tiles ----
// The tiles' layout, who stages what and which outputs a thread owns:
// kernels/conv2d_tiled_layout.h (host and device code, so a CPU test checks its banks).
// Two tile sizes, 64x64 (4x4 outputs a thread) and 128x128 (8x8), whose results are the
// same bits: each output is one sum over k in order, whichever thread holds it.
using Small = tiled::Layout<4>;
using Large = tiled::Layout<8>;
using tiled::kTileK;
constexpr int kTileThreads = tiled::kThreads;
static_assert(kTcK % kTileK == 0, "v2 and v3 share the split-K planner: a slice of whole v3 "
                                  "K steps is whole v2 K steps");

// grid (m tiles, n tiles, splits): M, the long side (N*OH*OW rows: 4.2M at 64x256x256), on
// x, whose limit is 2^31 - 1 (y and z stop at 65,535). Block z sums k in
// [z * k_slice, (z+1) * k_slice) and, when splitting, writes (not adds) its partial tile to
// c + z * m * n.
// Two stages of each tile in shared memory: a K step multiplies out of one while its
// thread's loads for the next step (a gather: index arithmetic, then global memory) are
// already issued into registers; they go into the other stage after the products, so a step
// waits at one barrier instead of two, and the loads' latency overlaps the products. Each
// output's sum runs over k in the same order as in a one-stage loop: the same bits.
// Registers (ptxas sm_80): the small tiles held to 64 a thread, 4 blocks an SM as before the
// second stage (61-64, no spills); the large tiles' 64 accumulators and the gathers'
// addresses take 127-142 in runs (sm_90: 130-151) and 145-154 element by element (sm_90:
// 159-167), one block an SM. Held to 128 for two blocks, the runs fit on sm_80, but on
// sm_90 the forward and the dgrad spill 12 and 16 bytes in the loop (docs/kernels.md).
// A thread's run of a tile (Layout::run_element), from its first element, into its stage.
// Along the side its kShare floats are adjacent there: one 16- or 8-byte store (a warp's
// scalar stores would land 4 or 2 to a bank). Along k they are kRow apart: kShare scalar
// stores, 32 banks a warp (tests/test_conv2d_tiled_layout.cpp).
template <class L, bool kAlongK>
__device__ void store_run(float* stage, const tiled::TileElement& first,
                          const float (&v)[L::kShare]) {
  float* at = stage + L::offset(first.side, first.k);
  if constexpr (kAlongK) {
#pragma unroll
    for (int r = 0; r < L::kShare; ++r) at[r * L::kRow] = v[r];
  } else if constexpr (L::kShare == 4) {
    *reinterpret_cast<float4*>(at) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    static_assert(L::kShare == 2, "runs of 4 (128x128 tiles) or 2 (64x64)");
    *reinterpret_cast<float2*>(at) = make_float2(v[0], v[1]);
  }
}

// kRuns: each thread stages its share of a tile as one run along the operand's memory, one
// 16-byte load (8 on 64x64 tiles) where it is kShare gathers without (Layout::run_element;
// launch_tiled takes it where every run is whole and aligned). The same elements either
// way, in the same places: the same bits.
template <int kMicro, bool kRuns, class LoadA, class LoadB>
__global__ void __launch_bounds__(kTileThreads, kMicro == 4 ? 4 : 1)
gemm_tiled(int64_t m, int64_t n, int64_t k, int64_t k_slice, LoadA a, LoadB b,
           const float* bias, float* c, bool accumulate) {
  using L = tiled::Layout<kMicro>;
  // Each tile walked by the threads the way its operand runs in memory (the loaders say).
  constexpr bool kAAlongK = LoadA::kColumnsContiguous;   // A's columns are k
  constexpr bool kBAlongK = !LoadB::kColumnsContiguous;  // B's rows are
  __shared__ __align__(16) float as[2][L::kStageFloats];  // A's tile, transposed: [k][row]
  __shared__ __align__(16) float bs[2][L::kStageFloats];  // B's tile: [k][column]
  const int t = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * L::kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * L::kTile;
  const int64_t k_begin = blockIdx.z * k_slice;
  const int64_t k_end = k_begin + k_slice < k ? k_begin + k_slice : k;
  if (gridDim.z > 1) c += blockIdx.z * m * n;
  // This thread's elements of each tile, and their values for the next K step (zeros
  // outside the matrices).
  tiled::TileElement ea[L::kShare], eb[L::kShare];
#pragma unroll
  for (int r = 0; r < L::kShare; ++r) {
    ea[r] = kRuns ? L::template run_element<kAAlongK>(t, r) : L::template element<kAAlongK>(t, r);
    eb[r] = kRuns ? L::template run_element<kBAlongK>(t, r) : L::template element<kBAlongK>(t, r);
  }
  // The halves of the elements' indices that hold for the whole K loop (the loaders' row()
  // and col()): A's rows and B's columns; an element past the matrix is never loaded.
  typename LoadA::Row a_row[L::kShare];
  typename LoadB::Col b_col[L::kShare];
  bool a_row_ok[L::kShare], b_col_ok[L::kShare];
#pragma unroll
  for (int r = 0; r < L::kShare; ++r) {
    const int64_t gr = row0 + ea[r].side, gc = col0 + eb[r].side;
    a_row_ok[r] = gr < m;
    a_row[r] = a.row(gr);
    b_col_ok[r] = gc < n;
    b_col[r] = b.col(gc);
  }
  float a_next[L::kShare], b_next[L::kShare];
  const auto fetch = [&](int64_t k0) {
    // Walked along k, a thread's elements share their k (Layout::element): one half of it
    // for all of them, taken here (left to the compiler, it was taken once an element).
    const int64_t a_k = k0 + ea[0].k, b_k = k0 + eb[0].k;
    const typename LoadA::Col a_shared = a.col(a_k);
    const typename LoadB::Row b_shared = b.row(b_k);
    if constexpr (kRuns) {
      // One run of each tile: its first element's halves; the whole run lies in the matrix
      // or out of it (launch_tiled).
      a.run(a_row[0], a_shared, a_row_ok[0] && a_k < k_end, a_next);
      b.run(b_shared, b_col[0], b_k < k_end && b_col_ok[0], b_next);
    } else {
#pragma unroll
      for (int r = 0; r < L::kShare; ++r) {
        const int64_t gk = kAAlongK ? a_k : k0 + ea[r].k;
        const typename LoadA::Col a_col = kAAlongK ? a_shared : a.col(gk);
        a_next[r] = a.at(a_row[r], a_col, a_row_ok[r] && gk < k_end);
        const int64_t gk2 = kBAlongK ? b_k : k0 + eb[r].k;
        const typename LoadB::Row b_row = kBAlongK ? b_shared : b.row(gk2);
        b_next[r] = b.at(b_row, b_col[r], gk2 < k_end && b_col_ok[r]);
      }
    }
  };
  const auto store = [&](int stage) {
    if constexpr (kRuns) {
      store_run<L, kAAlongK>(as[stage], ea[0], a_next);
      store_run<L, kBAlongK>(bs[stage], eb[0], b_next);
    } else {
#pragma unroll
      for (int r = 0; r < L::kShare; ++r) {
        as[stage][L::offset(ea[r].side, ea[r].k)] = a_next[r];
        bs[stage][L::offset(eb[r].side, eb[r].k)] = b_next[r];
      }
    }
  };
  float acc[kMicro][kMicro] = {};
  int stage = 0;
  if (k_begin < k_end) {
    fetch(k_begin);
    store(stage);
  }
  __syncthreads();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    const bool more = k0 + kTileK < k_end;  // the same for the whole block
    if (more) fetch(k0 + kTileK);
    const float* at = as[stage];
    const float* bt = bs[stage];
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      // the thread's rows of A and columns of B, 4 to a 16-byte shared-memory read
      float av[kMicro], bv[kMicro];
#pragma unroll
      for (int g = 0; g < kMicro; g += tiled::kGroup) {
        const float4 a4 = *reinterpret_cast<const float4*>(at + L::offset(L::row(t, g), kk));
        const float4 b4 = *reinterpret_cast<const float4*>(bt + L::offset(L::column(t, g), kk));
        av[g] = a4.x, av[g + 1] = a4.y, av[g + 2] = a4.z, av[g + 3] = a4.w;
        bv[g] = b4.x, bv[g + 1] = b4.y, bv[g + 2] = b4.z, bv[g + 3] = b4.w;
      }
#pragma unroll
      for (int i = 0; i < kMicro; ++i)
#pragma unroll
        for (int j = 0; j < kMicro; ++j) acc[i][j] += av[i] * bv[j];
    }
    if (more) {
      // The other stage was last read before the previous barrier: free to overwrite.
      store(stage ^ 1);
      __syncthreads();
      stage ^= 1;
    }
  }
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    const int64_t r = row0 + L::row(t, i);
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t col = col0 + L::column(t, j);
      if (col >= n) continue;
      if (gridDim.z > 1 || !accumulate) {
        c[r * n + col] = acc[i][j] + (bias ? bias[col] : 0.0f);
      } else {
        c[r * n + col] += acc[i][j];
      }
    }
  }
}

// c[i] (+)= sum over z of parts[z][i], z in order.
__global__ void reduce_splits(int64_t mn, int splits, const float* parts, float* c,
                              bool accumulate) {
  DDPM_GRID_STRIDE(i, mn) {
    float acc = 0.0f;
    for (int z = 0; z < splits; ++z) acc += parts[z * mn + i];
    c[i] = accumulate ? c[i] + acc : acc;
  }
}

// Slices of K: enough 128x128 blocks for two waves of the GPU (one an SM), each slice at
// least kMinSlice long (32 K steps, so a block's tile loads are amortised), at most
// kMaxSplits.
constexpr int64_t kMinSlice = 256;
constexpr int kMaxSplits = 32;

int64_t tiles(int64_t m, int64_t n, int tile) {
  return ((m + tile - 1) / tile) * ((n + tile - 1) / tile);
}

// Counted in 128x128 tiles whichever tile runs, so that the tile never changes a bit, and
// so that a wgrad's slices give the large tiles their two waves (the small ones four).
int choose_splits(int64_t m, int64_t n, int64_t k) {
  return split_k_count(tiles(m, n, Large::kTile), k, kMinSlice, kMaxSplits);
}

TiledTiles g_tiled_tiles = TiledTiles::Heuristic;
bool g_tiled_runs = true;
TiledLaunches g_tiled_launches;

// v2 with kMicro x kMicro outputs a thread; in runs where every run of each operand is
// whole (inside one tap's channels, and inside the matrix or out of it) and aligned.
template <int kMicro, class LoadA, class LoadB>
void launch_tiled(int64_t m, int64_t n, int64_t k, int64_t k_slice, int splits, LoadA a,
                  LoadB b, const float* bias, float* c, bool accumulate) {
  using L = tiled::Layout<kMicro>;
  constexpr int tile = L::kTile, run = L::kShare;
  // a run along k stays inside K and inside its slice (slices are whole K steps of 16)
  const auto whole = [&](bool along_k, int64_t side) {
    return along_k ? k % run == 0 : side % run == 0;
  };
  const bool runs = g_tiled_runs && a.runs_of(run) && b.runs_of(run) &&
                    whole(LoadA::kColumnsContiguous, m) && whole(!LoadB::kColumnsContiguous, n);
  const dim3 grid(static_cast<unsigned>((m + tile - 1) / tile),
                  static_cast<unsigned>((n + tile - 1) / tile), static_cast<unsigned>(splits));
  if (runs) {
    DDPM_LAUNCH((gemm_tiled<kMicro, true, LoadA, LoadB>), grid, kTileThreads)(
        m, n, k, k_slice, a, b, bias, c, accumulate);
    ++g_tiled_launches.runs;
  } else {
    DDPM_LAUNCH((gemm_tiled<kMicro, false, LoadA, LoadB>), grid, kTileThreads)(
        m, n, k, k_slice, a, b, bias, c, accumulate);
  }
}

// workspace: null (never split) or room for choose_splits(m, n, k) * m * n floats.
template <class LoadA, class LoadB>
void gemm(ConvAlgo algo, int64_t m, int64_t n, int64_t k, LoadA a, LoadB b, const float* bias,
          float* c, bool accumulate, float* workspace = nullptr) {
  if (m == 0 || n == 0) return;
  if (algo == ConvAlgo::Naive) {
    DDPM_LAUNCH((gemm_naive<LoadA, LoadB>), grid_for(m * n), kThreads)(
        m, n, k, a, b, bias, c, accumulate);
    return;
  }
  const int splits = workspace ? choose_splits(m, n, k) : 1;
  // each slice a whole number of K steps (kTcK is a multiple of kTileK)
  const int64_t k_slice = ((k + splits - 1) / splits + kTcK - 1) / kTcK * kTcK;
  const float* tile_bias = splits > 1 ? nullptr : bias;
  float* out = splits > 1 ? workspace : c;
  if (algo == ConvAlgo::TensorCore) {
    CHECK(compute_capability() >= 80, "the tensor-core convolution (TF32) needs sm_80 or later, "
                                      "this device is sm_" << compute_capability());
    const dim3 grid(static_cast<unsigned>((m + kTcTile - 1) / kTcTile),
                    static_cast<unsigned>((n + kTcTile - 1) / kTcTile),
                    static_cast<unsigned>(splits));
    DDPM_LAUNCH((gemm_tensor_core<LoadA, LoadB>), grid, kTcThreads)(
        m, n, k, k_slice, a, b, tile_bias, out, accumulate);
  } else if (conv2d_tiled_takes_large_tiles(m, n, splits)) {
    launch_tiled<8>(m, n, k, k_slice, splits, a, b, tile_bias, out, accumulate);
    ++g_tiled_launches.large;
  } else {
    launch_tiled<4>(m, n, k, k_slice, splits, a, b, tile_bias, out, accumulate);
    ++g_tiled_launches.small;
  }
  if (splits > 1) {
    DDPM_LAUNCH(reduce_splits, grid_for(m * n), kThreads)(m * n, splits, workspace, c, accumulate);
  }
}

int64_t split_k_workspace(const Conv2dShape& s, ConvAlgo algo) {
  if (algo == ConvAlgo::Naive) return 0;
  const int64_t m = static_cast<int64_t>(s.kh) * s.kw * s.c_in;  // wgrad's output rows
  const int64_t k = s.n * s.out_h() * s.out_w();
  const int splits = choose_splits(m, s.c_out, k);
  return splits > 1 ? splits * m * s.c_out : 0;
}

BroadcastShape bias_rows(const Conv2dShape& s) {
  return BroadcastShape{1, s.n * s.out_h() * s.out_w(), s.c_out, false};
}

// db += column sums of dy, in the workspace after the GEMMs' `gemm_floats` (if any: a
// pointer past the end of the workspace is never passed on).
// A: dy's storage, fp32 or bf16 bits.
template <class A>
void bias_gradient(const Conv2dShape& s, const A* dy, float* db, float* workspace,
                   int64_t gemm_floats) {
  const bool room = workspace && broadcast_add_backward_workspace(bias_rows(s)) > 0;
  broadcast_add_backward(bias_rows(s), dy, db, room ? workspace + gemm_floats : nullptr);
}

bool is_cudnn(ConvAlgo a) {
  return a == ConvAlgo::Cudnn || a == ConvAlgo::CudnnTf32 || a == ConvAlgo::CudnnBf16;
}

CudnnMath cudnn_math(ConvAlgo a) {
  return a == ConvAlgo::CudnnBf16 ? CudnnMath::Bf16
         : a == ConvAlgo::CudnnTf32 ? CudnnMath::Tf32
                                    : CudnnMath::Fp32;
}

bool is_auto(ConvAlgo a) {
  return a == ConvAlgo::AutoFp32 || a == ConvAlgo::AutoTf32 || a == ConvAlgo::AutoBf16;
}

// Our kernel of an algo's math, and the cuDNN algo of it.
ConvAlgo ours_of(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::CudnnBf16:
    case ConvAlgo::AutoBf16: return ConvAlgo::Bf16TensorCore;
    case ConvAlgo::CudnnTf32:
    case ConvAlgo::AutoTf32: return ConvAlgo::Tf32TensorCore;
    case ConvAlgo::Cudnn:
    case ConvAlgo::AutoFp32: return ConvAlgo::Tiled;
    default: return a;
  }
}
// What Auto* times: our kernels of its math and cuDNN's. The first is the one the others
// are checked against (kernels/cuda/autotune_check.cuh), a kernel that has passed its tests
// on a GPU: v4 in bf16, v2 in fp32, and cuDNN in TF32, where v4's TF32 products (2026-12-06)
// have not run on one yet. fp32 has two of ours, v2 and v4 on bf16x6 pieces (fp32's numbers
// on bf16 tensor cores, sm_80 and later only, as v4 is). Fixed lists: every convolution of
// an auto run asks.
const std::vector<ConvAlgo>& auto_candidates(ConvAlgo a) {
  static const std::vector<ConvAlgo> bf16{ConvAlgo::Bf16TensorCore, ConvAlgo::CudnnBf16},
      tf32{ConvAlgo::CudnnTf32, ConvAlgo::Tf32TensorCore},
      fp32{ConvAlgo::Tiled, ConvAlgo::Bf16x6TensorCore, ConvAlgo::Cudnn},
      fp32_before_sm80{ConvAlgo::Tiled, ConvAlgo::Cudnn};
  if (a == ConvAlgo::AutoBf16) return bf16;
  if (a == ConvAlgo::AutoTf32) return tf32;
  return compute_capability() >= 80 ? fp32 : fp32_before_sm80;
}

// What runs pass `pass` of s: cuDNN where it has an algorithm for the shape, else our kernel
// of the same math; under Auto* the autotuner's choice among its candidates, timed on
// operands like the call's: activations of storage A (float, or bf16 bits), w_bf16 given or
// not.
template <class A>
ConvAlgo resolve(const Conv2dShape& s, ConvAlgo a, ConvPass pass, const uint16_t* w_bf16) {
  if (is_auto(a))
    a = conv2d_autotuned(s, pass, ConvOperands{sizeof(A) == 2, w_bf16 != nullptr},
                         auto_candidates(a));
  return conv2d_algo_runs(s, a) ? a : ours_of(a);
}

// The algos that may run a pass of s under a: a itself (our kernel where a cuDNN algo cannot
// run s), or under Auto* each candidate that can: the workspace is sized for all of them, so
// that asking for it times nothing and fits whichever the autotuner picks.
std::vector<ConvAlgo> algos_that_may_run(const Conv2dShape& s, ConvAlgo a) {
  if (!is_auto(a)) return {conv2d_algo_runs(s, a) ? a : ours_of(a)};
  std::vector<ConvAlgo> algos;
  for (ConvAlgo c : auto_candidates(a))
    if (conv2d_algo_runs(s, c)) algos.push_back(c);
  return algos;
}

// Under Auto* the backward's two passes may each pick another algo: each then runs its own
// (false, nothing run, for the other algos). A: the activations' storage.
template <class A>
bool auto_backward(const Conv2dShape& s, const A* x, const float* w, const A* dy, A* dx,
                   float* dw, float* db, ConvAlgo algo, float* workspace,
                   const uint16_t* w_bf16, GradWrite dx_write, GradWrite dw_write) {
  if (!is_auto(algo)) return false;
  const ConvAlgo d = resolve<A>(s, algo, ConvPass::Dgrad, w_bf16);
  const ConvAlgo w_algo = resolve<A>(s, algo, ConvPass::Wgrad, w_bf16);
  if (d == w_algo) {
    conv2d_backward(s, x, w, dy, dx, dw, db, d, workspace, w_bf16, dx_write, dw_write);
    return true;
  }
  if (dx) conv2d_backward(s, x, w, dy, dx, nullptr, nullptr, d, workspace, w_bf16, dx_write);
  if (dw || db)
    conv2d_backward(s, x, w, dy, nullptr, dw, db, w_algo, workspace, nullptr,
                    GradWrite::Accumulate, dw_write);
  return true;
}

}  // namespace

void set_conv2d_tiled_tiles(TiledTiles t) { g_tiled_tiles = t; }
void set_conv2d_tiled_runs(bool on) { g_tiled_runs = on; }

// The large tiles' blocks take one an SM (up to 167 registers a thread: a quarter of the
// blocks, each staging its tiles for 4 times the products); where they would not fill every
// SM twice, the last wave's idle SMs would cost more than the small tiles' extra
// instructions (a heuristic, not yet timed on a GPU; kernel-bench times both tiles).
bool conv2d_tiled_takes_large_tiles(int64_t m, int64_t n, int splits) {
  if (g_tiled_tiles != TiledTiles::Heuristic) return g_tiled_tiles == TiledTiles::Large;
  return tiles(m, n, Large::kTile) * splits >= 2 * static_cast<int64_t>(sm_count());
}
TiledLaunches conv2d_tiled_launches() { return g_tiled_launches; }

const char* conv_algo_name(ConvAlgo algo) {
  switch (algo) {
    case ConvAlgo::Naive: return "v1 naive";
    case ConvAlgo::Tiled: return "v2 tiled";
    case ConvAlgo::TensorCore: return "v3 TF32";
    case ConvAlgo::Bf16TensorCore: return "v4 bf16";
    case ConvAlgo::Tf32TensorCore: return "v4 TF32";
    case ConvAlgo::Bf16x6TensorCore: return "v4 fp32 on bf16x6";
    case ConvAlgo::Cudnn: return "cuDNN fp32";
    case ConvAlgo::CudnnTf32: return "cuDNN TF32";
    case ConvAlgo::CudnnBf16: return "cuDNN bf16";
    case ConvAlgo::AutoFp32: return "auto fp32";
    case ConvAlgo::AutoTf32: return "auto TF32";
    case ConvAlgo::AutoBf16: return "auto bf16";
  }
  return "?";
}

bool conv2d_algo_runs(const Conv2dShape& s, ConvAlgo algo) {
  return !is_cudnn(algo) || conv2d_cudnn_supported(s, cudnn_math(algo));
}

bool conv2d_dgrad_uses_workspace(ConvAlgo algo) {
  return algo == ConvAlgo::Bf16TensorCore || algo == ConvAlgo::Tf32TensorCore ||
         algo == ConvAlgo::Bf16x6TensorCore || is_cudnn(algo) || is_auto(algo);
}

int64_t conv2d_forward_workspace(const Conv2dShape& s, ConvAlgo algo) {
  int64_t floats = 0;
  for (ConvAlgo a : algos_that_may_run(s, algo))
    floats = std::max(floats, is_cudnn(a) ? conv2d_cudnn_forward_workspace(s, cudnn_math(a))
                              : a == ConvAlgo::Bf16TensorCore ? conv2d_bf16_forward_workspace(s)
                              : a == ConvAlgo::Tf32TensorCore ? conv2d_tf32_forward_workspace(s)
                              : a == ConvAlgo::Bf16x6TensorCore
                                  ? conv2d_pieces_forward_workspace(s, PieceSplit::Fp32)
                                  : 0);
  return floats;
}

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                    float* y, ConvAlgo algo, float* workspace, const float* per_sample,
                    const float* residual, const uint16_t* w_bf16) {
  algo = resolve<float>(s, algo, ConvPass::Forward, w_bf16);
  if (is_cudnn(algo))
    return conv2d_cudnn_forward(s, x, w, b, y, cudnn_math(algo), workspace, per_sample, residual,
                                w_bf16);
  if (algo == ConvAlgo::Bf16TensorCore)
    return conv2d_bf16_forward(s, x, w, b, y, workspace, per_sample, residual, w_bf16);
  if (algo == ConvAlgo::Tf32TensorCore)
    return conv2d_tf32_forward(s, x, w, b, y, workspace, per_sample, residual);
  if (algo == ConvAlgo::Bf16x6TensorCore)
    return conv2d_pieces_forward(s, PieceSplit::Fp32, x, w, b, y, workspace, per_sample,
                                 residual);
  check_index_limits(s);
  const int64_t oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t m = s.n * oh_n * ow_n, k = static_cast<int64_t>(s.kh) * s.kw * s.c_in;
  gemm(algo, m, s.c_out, k, Im2col(s, x), Dense{w, s.c_out}, b, y, false);
  if (per_sample)
    broadcast_add_forward(BroadcastShape{s.n, oh_n * ow_n, s.c_out, true}, y, per_sample, y);
  if (residual) add_forward(m * s.c_out, y, residual, y);
}

// The wgrad's split-K slices (v2, v3), then the bias gradient's column sums.
// v4: its bf16 operand copies and split-K planes instead; cuDNN: its staged operands and
// its own workspace.
int64_t conv2d_backward_workspace(const Conv2dShape& s, ConvAlgo algo) {
  int64_t gemm = 0;  // under Auto*, each pass its own choice, run one after the other
  for (ConvAlgo a : algos_that_may_run(s, algo))
    gemm = std::max(gemm, is_cudnn(a) ? conv2d_cudnn_backward_workspace(s, cudnn_math(a))
                          : a == ConvAlgo::Bf16TensorCore ? conv2d_bf16_backward_workspace(s)
                          : a == ConvAlgo::Tf32TensorCore ? conv2d_tf32_backward_workspace(s)
                          : a == ConvAlgo::Bf16x6TensorCore
                              ? conv2d_pieces_backward_workspace(s, PieceSplit::Fp32)
                              : split_k_workspace(s, a));
  return gemm + broadcast_add_backward_workspace(bias_rows(s));
}

void conv2d_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, ConvAlgo algo, float* workspace,
                     const uint16_t* w_bf16, GradWrite dx_write, GradWrite dw_write) {
  if (auto_backward(s, x, w, dy, dx, dw, db, algo, workspace, w_bf16, dx_write, dw_write)) return;
  algo = resolve<float>(s, algo, ConvPass::Dgrad, w_bf16);
  if (is_cudnn(algo)) {
    conv2d_cudnn_backward(s, x, w, dy, dx, dw, cudnn_math(algo), workspace, w_bf16, dx_write,
                          dw_write);
    if (db)
      bias_gradient(s, dy, db, workspace, conv2d_cudnn_backward_workspace(s, cudnn_math(algo)));
    return;
  }
  if (algo == ConvAlgo::Bf16TensorCore) {
    conv2d_bf16_backward(s, x, w, dy, dx, dw, workspace, w_bf16, dx_write, dw_write);
    if (db) bias_gradient(s, dy, db, workspace, conv2d_bf16_backward_workspace(s));
    return;
  }
  if (algo == ConvAlgo::Tf32TensorCore) {
    conv2d_tf32_backward(s, x, w, dy, dx, dw, workspace, dx_write, dw_write);
    if (db) bias_gradient(s, dy, db, workspace, conv2d_tf32_backward_workspace(s));
    return;
  }
  if (algo == ConvAlgo::Bf16x6TensorCore) {
    conv2d_pieces_backward(s, PieceSplit::Fp32, x, w, dy, dx, dw, workspace, dx_write,
                           dw_write);
    if (db)
      bias_gradient(s, dy, db, workspace, conv2d_pieces_backward_workspace(s, PieceSplit::Fp32));
    return;
  }
  check_index_limits(s);
  const int64_t taps = s.taps(), m = s.n * s.out_h() * s.out_w();
  if (dx)
    gemm(algo, s.n * s.h * s.w, s.c_in, taps * s.c_out, DgradA(s, dy), DgradB(s, w), nullptr, dx,
         dx_write == GradWrite::Accumulate);
  const int64_t split_floats = split_k_workspace(s, algo);
  if (dw)
    gemm(algo, taps * s.c_in, s.c_out, m, Transposed<Im2col>{Im2col(s, x)}, Dense{dy, s.c_out},
         nullptr, dw, dw_write == GradWrite::Accumulate, split_floats > 0 ? workspace : nullptr);
  if (db) bias_gradient(s, dy, db, workspace, split_floats);
}

bool conv2d_reads_bf16(ConvAlgo algo) {
  return algo == ConvAlgo::Bf16TensorCore || algo == ConvAlgo::CudnnBf16 ||
         algo == ConvAlgo::AutoBf16;
}

void conv2d_forward(const Conv2dShape& s, const uint16_t* x, const float* w, const float* b,
                    uint16_t* y, ConvAlgo algo, float* workspace, const float* per_sample,
                    const uint16_t* residual, const uint16_t* w_bf16) {
  CHECK(conv2d_reads_bf16(algo), conv_algo_name(algo) << " does not read bf16 activations");
  algo = resolve<uint16_t>(s, algo, ConvPass::Forward, w_bf16);
  if (is_cudnn(algo))
    return conv2d_cudnn_forward(s, x, w, b, y, workspace, per_sample, residual, w_bf16);
  conv2d_bf16_forward(s, x, w, b, y, workspace, per_sample, residual, w_bf16);
}

void conv2d_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                     const uint16_t* dy, uint16_t* dx, float* dw, float* db, ConvAlgo algo,
                     float* workspace, const uint16_t* w_bf16, GradWrite dx_write,
                     GradWrite dw_write) {
  CHECK(conv2d_reads_bf16(algo), conv_algo_name(algo) << " does not read bf16 activations");
  if (auto_backward(s, x, w, dy, dx, dw, db, algo, workspace, w_bf16, dx_write, dw_write)) return;
  algo = resolve<uint16_t>(s, algo, ConvPass::Dgrad, w_bf16);
  if (is_cudnn(algo)) {
    conv2d_cudnn_backward(s, x, w, dy, dx, dw, workspace, w_bf16, dx_write, dw_write);
    if (db)
      bias_gradient(s, dy, db, workspace, conv2d_cudnn_backward_workspace(s, CudnnMath::Bf16));
    return;
  }
  conv2d_bf16_backward(s, x, w, dy, dx, dw, db, workspace, w_bf16, dx_write, dw_write);
}

}  // namespace ddpm::cuda
