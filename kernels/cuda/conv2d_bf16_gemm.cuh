// What convolutions v4 (conv2d_bf16.cu: mma.sync) and v5 (conv2d_bf16_v5.cu: Hopper's wgmma)
// share, and only they: the operands' shared-memory tiles, the loaders that gather each
// pass's A and B chunk by chunk (im2col of x, dy by tap, the weights, dy as rows), the
// epilogues that take C's elements (the forward's adds, dx and dw written or added to), the
// split-K plan and the planes' sum. conv2d_bf16.cu's opening comment explains all of it; the
// two kernels differ only in how a stage is multiplied. Internal: the engine's interface is
// conv2d_bf16.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/dgrad_phases.h"
#include "kernels/shapes.h"

namespace ddpm::cuda::conv_bf16 {

using bf16_bits = uint16_t;

constexpr int kBK = 32;    // K per stage: two mma k-steps of 16
constexpr int kChunk = 8;  // bf16 per 16-byte cp.async

// The blocks an SM holds at once, at least (the kernel's launch bounds), for which the split
// plan sizes its one wave (below).
constexpr int kBlocksPerSm = 2;

// ---- shared-memory tiles ----------------------------------------------------------------

// One operand's tile of one stage: K-major (kMN rows of kBK) or MN-major (kBK rows of kMN),
// in 16-byte chunks stored at chunk ^ f(row).
template <bool kKMajor, int kMN, int kThreads>
struct Tile {
  static constexpr bool kIsKMajor = kKMajor;
  static constexpr int kRows = kKMajor ? kMN : kBK;
  static constexpr int kChunksPerRow = (kKMajor ? kBK : kMN) / kChunk;
  static constexpr int kElements = kRows * kChunksPerRow * kChunk;
  static constexpr int kChunksPerThread = kRows * kChunksPerRow / kThreads;
  static_assert(kChunksPerRow == 4 || kChunksPerRow % 8 == 0, "the swizzles below");
  static_assert(kChunksPerThread >= 1 && kRows * kChunksPerRow % kThreads == 0,
                "every thread copies the same number of whole chunks");

  __device__ static int offset(int row, int chunk) {  // in elements
    const int f = kChunksPerRow == 4 ? (row >> 1) & 3 : row & 7;
    return (row * kChunksPerRow + (chunk ^ f)) * kChunk;
  }
  // This thread's j-th chunk of the tile: consecutive threads take consecutive chunks of a
  // row, so a warp's cp.async covers whole rows (coalesced global reads).
  __device__ static int row_of(int tid, int j) { return (tid + j * kThreads) / kChunksPerRow; }
  __device__ static int chunk_of(int tid, int j) { return (tid + j * kThreads) % kChunksPerRow; }
};
// ---- loaders: where each of a thread's two chunks comes from, stage after stage ----------
// K-major loaders: the thread's chunks are rows mn[0], mn[1] at one k; MN-major loaders: one
// column chunk mn at rows k[0], k[1]. chunk() gives the source of chunk j for the current
// stage and whether it holds data (else the copy writes zeros: outside the image, the
// matrix or the K slice; the source is then the operand's base, a valid address never
// read); advance() moves every chunk 32 along k. A flag beside the address, not a null
// address, because testing a pointer for null is two compares of 64 bits per chunk and
// stage, and choosing between it and the base two selects more.
// `cache`: where the copy keeps its source on the way (ptx::CacheAt): L2 only, unless the
// loader's gather rereads what it reads (ForwardA, DgradA).
struct Chunk {
  const bf16_bits* src;
  bool valid;
  ptx::CacheAt cache = ptx::CacheAt::L2;
};

// Which taps of a row's window land on the input (for the dgrad: on dy), as
// one word: bit kh (0-15) when row kh of the window does, bit 16 + kw when column kw does;
// tap (kh, kw) lands when both are set. Computed once per row at the start (a row is a
// pixel, fixed for the whole K loop), so a chunk's test per stage is an AND and a compare,
// where testing the coordinates against the image's bounds took four compares (and, in the
// dgrad, a divisibility test by the stride) per chunk and stage. Kernels up to 16 x 16
// (check_shape_limits).
struct TapMask {
  static constexpr int kMaxTaps = 16;  // per side
  __device__ static uint32_t bits(int kh, int kw) { return (1u << kh) | (1u << (16 + kw)); }
  // Bits [lo, hi) of [0, n).
  __device__ static uint32_t side(int lo, int hi, int n) {
    uint32_t b = 0;
    for (int t = lo > 0 ? lo : 0; t < (hi < n ? hi : n); ++t) b |= 1u << t;
    return b;
  }
  __device__ static bool lands(uint32_t mask, uint32_t tap_bits) {
    return (mask & tap_bits) == tap_bits;
  }
};

// The order of K = taps x C8 (the forward's (tap, ci), the dgrad's (tap, co)): blocks of
// `block` channels outermost, then the tap, then the channel within the block, i.e. k =
// (c / block, tap, c % block). block = C8 is the plain order, tap then channel (c fastest).
// block = 64 wherever C8 is a multiple of 64 (and the kernel more than one tap), so that
// consecutive stages read the same 64 channels through consecutive taps. Why: tap (kh, kw +
// 1) of row m reads what tap (kh, kw) of row m + 1 read; in the plain order that reread is
// C8 / 32 stages behind (12 at 384 channels: 96 KB of a 128-row tile's A, 192 KB of a
// 256-row one's, past their L1), here one or two. Each loader walks its K in this order (a
// carry into the next tap every `block` channels, into the next block after the last tap);
// `natural` maps an index of this order to the plain one's, tap C8 + c. The order depends on
// the shape only, so every block shape still sums in the same order (the same bits).
struct KOrder {
  static constexpr int kBlock = 64;  // channels a block, where C8 is a multiple of it
  int taps = 1, c8 = 1, block = 1;   // the default: the plain order of one "tap"
  static KOrder of(int taps, int c8) {
    return {taps, c8, c8 % kBlock == 0 && taps > 1 ? kBlock : c8};
  }
  __host__ __device__ bool plain() const { return block == c8; }
  struct Place {
    int tap, c;  // k's tap and channel
  };
  __host__ __device__ Place place(int64_t k) const {
    const int64_t span = int64_t{taps} * block, r = k % span;
    return {static_cast<int>(r / block), static_cast<int>(k / span * block + r % block)};
  }
  __host__ __device__ int64_t natural(int64_t k) const {
    const Place p = place(k);
    return int64_t{p.tap} * c8 + p.c;
  }
};

// k = (c / block, kh, kw, c % block) over KH x KW x C8 (KOrder), advanced 32 a stage with a
// carry. What depends on the tap (kh, kw), its element offset in the loader's layout and its
// two bits for the rows' masks (TapMask), changes only when the tap does, so it is
// recomputed only on a carry: a stage without one costs an add and a compare. In blocks of
// 64 channels the carry is at each block's end (found from c itself: no register more than
// the plain order's walk), back to the block's first channel through the next tap, or past
// the last tap into the next block.
struct TapChannel {
  int kh = 0, kw = 0, c = 0;
  int k_left = 0;         // k_end - k: the chunk is past the K slice when <= 0
  int tap_offset = 0;     // L::tap_offset(kh, kw), elements
  uint32_t tap_bits = 0;  // TapMask::bits(kh, kw)
  template <class L>
  __device__ void start(const L& l, int64_t k0, int64_t k_end, const KOrder& o, int kw_n) {
    k_left = static_cast<int>(k_end - k0);
    const KOrder::Place p = o.place(k0);
    c = p.c;
    kh = p.tap / kw_n;
    kw = p.tap % kw_n;
    retap(l);
  }
  template <class L>
  __device__ void advance(const L& l, const KOrder& o, int kw_n, int kh_n) {
    k_left -= kBK;
    c += kBK;
    if (o.plain()) {  // the plain order: a carry past the tap's last channel
      if (c < o.c8) return;
      do {
        c -= o.c8;
        if (++kw == kw_n) {
          kw = 0;
          ++kh;
        }
      } while (c >= o.c8);
    } else {  // blocks of 64 channels: past one's end when c % 64 fell below 32 (c is the
              // thread's chunk, 0-24 into a 32-deep half)
      if (c % KOrder::kBlock >= kBK) return;
      c -= KOrder::kBlock;
      if (++kw == kw_n) {
        kw = 0;
        if (++kh == kh_n) {
          kh = 0;
          c += KOrder::kBlock;
        }
      }
    }
    retap(l);
  }
  template <class L>
  __device__ void retap(const L& l) {
    tap_offset = l.tap_offset(kh, kw);
    tap_bits = TapMask::bits(kh, kw);
  }
};

// The state of a loader that gathers each row's window of taps (ForwardA, DgradA): each
// row's window origin and its TapMask, set once at the start, and one walk along K
// (TapChannel) for all of the thread's rows. Chunk j is its row's origin plus the tap's
// offset and the channel, where the tap lands and K is within the slice.
template <int kJ>
struct WindowState {
  int64_t origin[kJ];  // elements from the operand (negative at the image's top-left edge)
  uint32_t taps[kJ];   // TapMask; 0: the row is past M
  TapChannel k;
  __device__ Chunk chunk(const bf16_bits* operand, int j, ptx::CacheAt cache) const {
    const bool valid = k.k_left > 0 && TapMask::lands(taps[j], k.tap_bits);
    return {valid ? operand + origin[j] + (k.tap_offset + k.c) : operand, valid, cache};
  }
};

// Forward A: im2col(x8)[m = (n, oh, ow)][k = (kh, kw, ci)], x8 (N, H, W, Cin8). Row m's
// window has its origin at input pixel (oh * stride - pad_top, ow * stride - pad_left), and
// tap (kh, kw) is (kh W + kw) Cin8 elements on from it. The windows of a block's rows
// overlap: tap (kh, kw + 1) of row m reads what tap (kh, kw) of row m + 1 read block / 32
// stages before (KOrder), so the copies go through L1 (kCache; L2 only for kernel-bench's
// comparison, set_conv2d_bf16_gathers_through_l1). A template parameter, not a field: as a
// run-time choice each copy became two predicated ones and the stage 12 instructions longer
// (sm_90 SASS, the 128x128 forward's loop: 155 -> 167).
template <ptx::CacheAt kCache = ptx::CacheAt::L1>
struct ForwardA {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;
  const bf16_bits* x8;
  KOrder order;  // K's (KOrder::of(KH KW, Cin8))
  template <int kJ>
  using State = WindowState<kJ>;
  __device__ int tap_offset(int kh, int kw) const {
    return (kh * static_cast<int>(s.w) + kw) * c8;
  }
  template <int kJ>
  __device__ State<kJ> start(const int64_t (&row)[kJ], int64_t k0, int64_t k_end) const {
    State<kJ> st;
    for (int j = 0; j < kJ; ++j) {
      st.origin[j] = 0;
      st.taps[j] = 0;
      if (row[j] >= m) continue;
      const int64_t ow = row[j] % ow_n, oh = row[j] / ow_n % oh_n, n = row[j] / (ow_n * oh_n);
      const int ih0 = static_cast<int>(oh * s.stride - s.pad_top);
      const int iw0 = static_cast<int>(ow * s.stride - s.pad_left);
      st.origin[j] = ((n * s.h + ih0) * s.w + iw0) * c8;
      st.taps[j] = TapMask::side(-ih0, static_cast<int>(s.h) - ih0, s.kh) |
                   TapMask::side(-iw0, static_cast<int>(s.w) - iw0, s.kw) << 16;
    }
    st.k.start(*this, k0, k_end, order, s.kw);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    return st.chunk(x8, j, kCache);
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const { st.k.advance(*this, order, s.kw, s.kh); }
};

// Dgrad A, of a stride-1 convolution (a strided convolution's dgrad runs by phase of dx,
// each phase the dgrad of a stride-1 convolution: kernels/dgrad_phases.h): the output
// gradient input pixel m = (n, ih, iw) received through tap (kh, kw), channel co:
// dy8[n, oh, ow, co] with oh = ih + pad_top - kh (zero outside [0, OH)). With
// (nh, nw) = (ih + pad_top, iw + pad_left), the row's origin is output pixel (nh, nw), tap
// (kh, kw) is -(kh OW + kw) Cout8 elements from it, and it lands when nh - kh is in
// [0, OH - 1] (and the same along w). OH and OW are dy's, given apart from the shape: a
// phase's shape describes its own pixels, and dy is the whole convolution's output. The
// windows overlap as the forward's do: kCache as there.
template <ptx::CacheAt kCache = ptx::CacheAt::L1>
struct DgradA {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;  // Cout8
  const bf16_bits* dy8;
  KOrder order;  // K's (KOrder::of(KH KW, Cout8))
  template <int kJ>
  using State = WindowState<kJ>;
  __device__ int tap_offset(int kh, int kw) const {
    return -(kh * static_cast<int>(ow_n) + kw) * c8;
  }
  template <int kJ>
  __device__ State<kJ> start(const int64_t (&row)[kJ], int64_t k0, int64_t k_end) const {
    State<kJ> st;
    for (int j = 0; j < kJ; ++j) {
      st.origin[j] = 0;
      st.taps[j] = 0;
      if (row[j] >= m) continue;
      const int64_t iw = row[j] % s.w, ih = row[j] / s.w % s.h, n = row[j] / (s.w * s.h);
      const int nh = static_cast<int>(ih + s.pad_top), nw = static_cast<int>(iw + s.pad_left);
      const int last_h = static_cast<int>(oh_n - 1), last_w = static_cast<int>(ow_n - 1);
      st.origin[j] = ((n * oh_n + nh) * ow_n + nw) * c8;
      st.taps[j] = TapMask::side(nh - last_h, nh + 1, s.kh) |
                   TapMask::side(nw - last_w, nw + 1, s.kw) << 16;
    }
    st.k.start(*this, k0, k_end, order, s.kw);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    return st.chunk(dy8, j, kCache);
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const { st.k.advance(*this, order, s.kw, s.kh); }
};

// Dgrad B as (Cin rows) x (K = (kh, kw, co)) K-major: w8[kh, kw, ci, co], w8 (KH, KW, Cin,
// Cout8). Row ci starts at ci Cout8; k's (tap, co) is at tap Cin Cout8 + co from there,
// which advances with k inside a tap and jumps (Cin - 1) Cout8 more at each carry into the
// next in the plain order; in blocks of 64 channels (KOrder) Cin Cout8 - 64 more at each
// block's end, and back to the first tap after the last. So this loader needs no
// TapChannel: an offset, the channel, the tap and what is left of the K slice, where the
// dgrad's A already holds a TapChannel of six registers. Offsets in 32 bits: the weights
// are under 2^31 elements (check_shape_limits).
struct DgradB {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int c8;  // Cout8
  const bf16_bits* w8;
  KOrder order;  // the dgrad's K (DgradA's)
  template <int kJ>
  struct State {
    int origin[kJ];  // ci Cout8; -1 for a row past Cin (no validity flag beside it)
    int at, c, tap;  // k's offset from a row's origin, its channel co and its tap
    int k_left;      // k_end - k
  };
  template <int kJ>
  __device__ State<kJ> start(const int64_t (&r)[kJ], int64_t k0, int64_t k_end) const {
    State<kJ> st;
    for (int j = 0; j < kJ; ++j) st.origin[j] = r[j] < s.c_in ? static_cast<int>(r[j]) * c8 : -1;
    const KOrder::Place p = order.place(k0);
    st.tap = p.tap;
    st.c = p.c;
    st.at = st.tap * static_cast<int>(s.c_in) * c8 + st.c;
    st.k_left = static_cast<int>(k_end - k0);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const bool valid = st.origin[j] >= 0 && st.k_left > 0;
    return {valid ? w8 + st.origin[j] + st.at : w8, valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const {
    st.k_left -= kBK;
    st.at += kBK;
    st.c += kBK;
    if (order.plain()) {
      while (st.c >= c8) {
        st.c -= c8;
        st.at += (static_cast<int>(s.c_in) - 1) * c8;
      }
      return;
    }
    if (st.c % KOrder::kBlock >= kBK) return;  // blocks of 64: past one's end (TapChannel)
    const int tap_step = static_cast<int>(s.c_in) * c8;
    st.c -= KOrder::kBlock;
    st.at += tap_step - KOrder::kBlock;
    if (++st.tap == order.taps) {
      st.tap = 0;
      st.c += KOrder::kBlock;
      st.at += KOrder::kBlock - order.taps * tap_step;
    }
  }
};

// The wgrad's K walk (WgradA): a stage's 32 pixels as whole images, rows and columns of the
// output map (OH x OW), worked out once on the host. A row's walk is then three adds and two
// carries a stage (a sum of two columns or two rows under 2 OW or 2 OH carries at most
// once), whatever the map's size. The loop it replaced carried a row at a time, 14
// instructions a trip (sm_90 SASS) and 32 / OW trips a stage: 8 on the 4x4 maps, where it
// doubled the 128x128 wgrad's stage. An image counts in elements of x8 (WgradA's offsets) or
// as one (v5's im2col copy walks the image's index: image_elements 1).
struct PixelStep {
  int ow = 0, oh = 0;  // kBK % OW, kBK / OW % OH
  int64_t images = 0;  // kBK / (OH OW) whole images, in elements of x8
  int64_t image = 0;   // one image, elements: H W Cin8
  static PixelStep of(int64_t oh_n, int64_t ow_n, int64_t image_elements) {
    return {static_cast<int>(kBK % ow_n), static_cast<int>(kBK / ow_n % oh_n),
            kBK / (oh_n * ow_n) * image_elements, image_elements};
  }
  // The pixel (ow, oh) of the image at `image` moved kBK pixels on.
  __device__ void walk(int& ow_at, int& oh_at, int64_t& image_at, int64_t ow_n,
                       int64_t oh_n) const {
    ow_at += ow;
    const bool next_row = ow_at >= ow_n;
    if (next_row) ow_at -= static_cast<int>(ow_n);
    oh_at += oh + next_row;
    const bool next_image = oh_at >= oh_n;
    if (next_image) oh_at -= static_cast<int>(oh_n);
    image_at += next_image ? images + image : images;
  }
};

// Wgrad A, MN-major: rows k = pixel (n, oh, ow), columns m = (kh, kw, ci) of dw, in the
// order of `order` (KOrder over taps x Cin8: where Cin8 is a multiple of 64, (ci / 64, kh,
// kw, ci % 64)); the chunk is 8 channels of x8 at input pixel (oh * stride - pad_top + kh,
// ...). The thread's column, so its tap and channel, is fixed for the whole K loop; its
// rows walk the pixels 32 at a time (PixelStep), and each keeps its sample's offset, so a
// chunk per stage is two multiply-adds for the pixel, an unsigned compare per side and
// 32-bit offset arithmetic (an image of H W Cin8 elements under 2^31: check_shape_limits),
// where it was a chain of 64-bit multiplies.
// Why the column order: a block's columns are then 64 channels through 2 taps (a 128-wide
// tile; 4 in a 256-wide one), where in the plain order they were one tap's 128 channels,
// and tap (kh, kw + 1) of pixel p reads what tap (kh, kw) of pixel p + 1 reads, in the same
// stage: what a block pulls of x halves, its rereads coalesced within a warp's copy or served
// by L1 (kCache, as ForwardA's). The order moves dw's rows, not its sums: every element adds
// the same products in the same order (AccumulateWgrad maps the rows back).
template <ptx::CacheAt kCache = ptx::CacheAt::L1>
struct WgradA {
  static constexpr bool kKMajor = false;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;  // Cin8
  const bf16_bits* x8;
  KOrder order;    // the columns' (KOrder::of(KH KW, Cin8))
  PixelStep step;  // PixelStep::of(OH, OW, H W Cin8)
  template <int kJ>
  struct State {
    bool valid;          // the column chunk is inside M
    int dh, dw, ci;      // kh - pad_top, kw - pad_left, the channel
    int64_t image[kJ];   // n H W Cin8: row j's sample, elements from x8
    int oh[kJ], ow[kJ];
    int k_left[kJ];      // k_end - row j's pixel
  };
  template <int kJ>
  __device__ State<kJ> start(int64_t col, const int64_t (&k0)[kJ], int64_t k_end) const {
    State<kJ> st;
    st.valid = col < m;
    const KOrder::Place p = order.place(col);
    st.ci = p.c;
    st.dh = p.tap / s.kw - s.pad_top;
    st.dw = p.tap % s.kw - s.pad_left;
    for (int j = 0; j < kJ; ++j) {
      st.k_left[j] = static_cast<int>(k_end - k0[j]);
      st.ow[j] = static_cast<int>(k0[j] % ow_n);
      st.oh[j] = static_cast<int>(k0[j] / ow_n % oh_n);
      st.image[j] = k0[j] / (ow_n * oh_n) * step.image;
    }
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const int ih = st.oh[j] * s.stride + st.dh, iw = st.ow[j] * s.stride + st.dw;
    // one unsigned compare per side: a negative coordinate wraps to a large one
    const bool valid = st.valid && st.k_left[j] > 0 &&
                       static_cast<unsigned>(ih) < static_cast<unsigned>(s.h) &&
                       static_cast<unsigned>(iw) < static_cast<unsigned>(s.w);
    return {valid ? x8 + st.image[j] + ((ih * static_cast<int>(s.w) + iw) * c8 + st.ci) : x8,
            valid, kCache};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const {
    for (int j = 0; j < kJ; ++j) {
      st.k_left[j] -= kBK;
      step.walk(st.ow[j], st.oh[j], st.image[j], ow_n, oh_n);
    }
  }
};

// B, MN-major, of a dense row-major matrix: rows of `cols` bf16 (a multiple of 8), the
// column chunks at or past `cols` zeros. Each of the thread's rows is an offset advanced 32
// rows a stage: an add, no multiply.
//   DenseRowsB (RowsB<false>): K in row order. The wgrad's dy8 (N*OH*OW pixels, Cout8).
//   TapRowsB (RowsB<true>): the forward's w8 (KH*KW*Cin8, Cout8), the weights as they are
//     stored (row tap Cin8 + ci), walked in the forward's K order (KOrder: k's row is
//     order.natural(k)). In blocks of 64 channels it jumps at each block's end to the next
//     tap's rows of the block (Cin8 - 64 rows on), after the last tap to the next block's
//     first; the rows of a thread's 32-row half of a stage lie in one block, and `half`
//     counts the halves of the blocks' cycle through the taps. Offsets in 32 bits: the
//     weights are under 2^31 elements (check_shape_limits).
template <bool kInKOrder>
struct RowsB {
  static constexpr bool kKMajor = false;
  using Offset = std::conditional_t<kInKOrder, int, int64_t>;
  int64_t cols;
  const bf16_bits* matrix;
  KOrder order;  // TapRowsB's
  template <int kJ>
  struct State {
    bool valid;
    Offset at[kJ];   // row j's chunk, elements from matrix
    int k_left[kJ];  // k_end - row j
    int half;        // TapRowsB: the stage half's place in the taps x 2 halves of a block
  };
  template <int kJ>
  __device__ State<kJ> start(int64_t col, const int64_t (&k0)[kJ], int64_t k_end) const {
    State<kJ> st;
    st.valid = col < cols;
    for (int j = 0; j < kJ; ++j) {
      st.at[j] = static_cast<Offset>((kInKOrder ? order.natural(k0[j]) : k0[j]) * cols + col);
      st.k_left[j] = static_cast<int>(k_end - k0[j]);
    }
    st.half = 0;
    if constexpr (kInKOrder) {  // the half's place in the cycle: its tap's, then its block's
      const KOrder::Place p = order.place(k0[0]);
      st.half = (p.tap * order.block + p.c % order.block) / kBK;
    }
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const bool valid = st.valid && st.k_left[j] > 0;
    return {valid ? matrix + st.at[j] : matrix, valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const {
    for (int j = 0; j < kJ; ++j) {
      st.at[j] += static_cast<Offset>(kBK * cols);
      st.k_left[j] -= kBK;
    }
    if constexpr (kInKOrder) {
      constexpr int kHalves = KOrder::kBlock / kBK;  // a block's halves through one tap
      if (order.plain() || ++st.half % kHalves != 0) return;
      int rows = order.c8 - KOrder::kBlock;  // to the next tap's rows of the block
      if (st.half == order.taps * kHalves) {  // after the last tap: the next block's first
        st.half = 0;
        rows += KOrder::kBlock - order.taps * order.c8;
      }
      for (int j = 0; j < kJ; ++j) st.at[j] += static_cast<Offset>(rows * cols);
    }
  }
};
using DenseRowsB = RowsB<false>;
using TapRowsB = RowsB<true>;

// ---- epilogues: what happens to C's elements (those in range) ---------------------------
// C reaches an epilogue a row at a time. row(r) does once what depends only on the row (its
// address; the forward's sample, a division), then each of the thread's pairs of adjacent
// columns goes to the call operator: col even, count 2, or 1 when col is the last column.
// A thread of a 128x128 block holds 8 rows of 4 pairs, so it divides 8 times, not once per
// element (64: a 64-bit division is tens of instructions, and 64 of them would cost as much
// issue as a short K loop), and moves each pair in one access when `paired` (storage.cuh:
// the row length even, the bases aligned).

// forward: y = ((C + bias) + per_sample[n]) + residual, each addend optional (a ResBlock's
// time embedding and skip), in the order of separate passes, in fp32, one store.
// rows_per_sample = OH * OW.
// A: the storage of y and the residual (the activations), fp32 or bf16 bits (the store
// rounds once, storage.cuh).
template <class A>
struct StoreWithAdds {
  A* y;
  const float *bias, *per_sample;
  const A* residual;
  int64_t ld, rows_per_sample;
  bool paired;  // rows_pair(ld, y) and rows_pair(ld, residual)
  struct Row {
    int64_t at;                  // row * ld
    const float* sample_vector;  // per_sample's row for this row's sample, or null
  };
  __device__ Row row(int64_t r) const {
    return {r * ld, per_sample ? per_sample + r / rows_per_sample * ld : nullptr};
  }
  __device__ void operator()(const Row& r, int64_t col, int count, const float (&c)[2]) const {
    float out[2], res[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      out[e] = c[e] + (bias && e < count ? bias[col + e] : 0.0f);
      if (r.sample_vector && e < count) out[e] += r.sample_vector[col + e];
    }
    if (residual) {
      load_cols(residual + r.at, col, count, paired, res);
      out[0] += res[0];
      out[1] += res[1];
    }
    store_cols(y + r.at, col, count, paired, out);
  }
  // The same epilogue storing into `scratch` (rows_reached(m) rows of ld, 8-byte aligned),
  // for the autotuner: it times the kernel that will run, epilogue included.
  StoreWithAdds into(void* scratch) const {
    StoreWithAdds e = *this;
    e.y = static_cast<A*>(scratch);
    return e;
  }
  int64_t rows_reached(int64_t m) const { return m; }  // of the output, by C's m rows
};

// C's row r is dx's pixel rows(r): itself, or for a phase of a strided dgrad its pixel
// (kernels/dgrad_phases.h; two 32-bit divisions a row).
template <class D>
struct Accumulate {  // dgrad: dx += C (a bf16 dx: rounded once, after the add), or dx = C
  D* out;
  int64_t ld;
  bool add;     // false: the first contribution to dx (kernels/grad_write.h)
  bool paired;  // rows_pair(ld, out)
  PhaseRows rows = {};
  struct Row {
    D* at;
  };
  __device__ Row row(int64_t r) const { return {out + rows(r) * ld}; }
  __device__ void operator()(const Row& r, int64_t col, int count, const float (&c)[2]) const {
    float v[2] = {c[0], c[1]};
    if (add) {
      float old[2];
      load_cols(r.at, col, count, paired, old);
      v[0] = old[0] + c[0];
      v[1] = old[1] + c[1];
    }
    store_cols(r.at, col, count, paired, v);
  }
  Accumulate into(void* scratch) const {  // as StoreWithAdds::into; writing, not adding
    Accumulate e = *this;
    e.out = static_cast<D*>(scratch);
    e.add = false;
    return e;
  }
  // A phase's rows are spread over all of dx: up to its last row's pixel (rows grows with r)
  int64_t rows_reached(int64_t m) const { return m > 0 ? rows(m - 1) + 1 : 0; }
};

// wgrad: dw += C (or dw = C) without the padded channels: C's rows are (tap, ci < Cin8) in
// WgradA's column order (KOrder), its columns co < Cout8; dw is (taps, Cin, Cout).
struct AccumulateWgrad {
  float* dw;
  int64_t c_in, c_out;
  KOrder order;  // C's rows' (WgradA's)
  bool add;      // false: the first contribution to dw (kernels/grad_write.h)
  bool paired;   // rows_pair(c_out, dw)
  struct Row {
    float* at;  // dw's row, or null for a padded input channel
  };
  __device__ Row row(int64_t r) const {
    const KOrder::Place p = order.place(r);
    return {p.c < c_in ? dw + (int64_t{p.tap} * c_in + p.c) * c_out : nullptr};
  }
  __device__ void operator()(const Row& r, int64_t col, int count, const float (&c)[2]) const {
    const int64_t real = c_out - col < count ? c_out - col : count;  // drop padded columns
    if (r.at == nullptr || real <= 0) return;
    float v[2] = {c[0], c[1]};
    if (add) {
      float old[2];
      load_cols(r.at, col, static_cast<int>(real), paired, old);
      v[0] = old[0] + c[0];
      v[1] = old[1] + c[1];
    }
    store_cols(r.at, col, static_cast<int>(real), paired, v);
  }
  AccumulateWgrad into(void* scratch) const {  // as StoreWithAdds::into
    AccumulateWgrad e = *this;
    e.dw = static_cast<float*>(scratch);
    e.add = false;
    return e;
  }
  int64_t rows_reached(int64_t m) const { return m; }  // dw's (tap, ci) rows: at most m
};

// ---- what every kernel does with its chunks and its C ---------------------------------------

// The loader's state for thread tid's two chunks of tile T (a Tile above) of the block whose
// rows (m or n) start at mn0, from k_begin: two rows at one k (K-major), or one column
// chunk at two rows of k (MN-major).
template <class T, class Loader>
__device__ auto start_chunks(const Loader& loader, int tid, int64_t mn0, int64_t k_begin,
                             int64_t k_end) {
  constexpr int kJ = T::kChunksPerThread;
  int64_t at[kJ];  // K-major: the chunks' rows (m or n); MN-major: their rows of k
  for (int j = 0; j < kJ; ++j) at[j] = (T::kIsKMajor ? mn0 : k_begin) + T::row_of(tid, j);
  if constexpr (T::kIsKMajor)
    return loader.start(at, k_begin + kChunk * T::chunk_of(tid, 0), k_end);
  else
    return loader.start(mn0 + kChunk * T::chunk_of(tid, 0), at, k_end);
}

// C's pair (row, col), (row, col + 1) (those inside n) to the epilogue, or to the block's
// split-K plane when there is one (8-byte aligned: launch_split checks).
template <class Epilogue>
__device__ __forceinline__ void hand_over(const Epilogue& epilogue,
                                          const typename Epilogue::Row& out_row, float* plane,
                                          int64_t row, int64_t col, int64_t n,
                                          const float (&v)[2]) {
  if (col >= n) return;
  const int count = col + 1 < n ? 2 : 1;
  if (plane) {
    store_cols(plane + row * n, col, count, n % 2 == 0, v);
  } else {
    epilogue(out_row, col, count, v);
  }
}

// The split-K planes summed in order, then the epilogue: a thread per pair of adjacent
// columns of C (the kernel's pairs), so one division finds the pair's row.
template <class Epilogue>
__global__ void reduce_planes(int64_t m, int64_t n, int splits, const float* planes,
                              Epilogue epilogue) {
  const bool plane_pairs = n % 2 == 0;
  DDPM_GRID_STRIDE(i, m * ColumnPair::pairs(n)) {
    const ColumnPair p(i, n);
    float acc[2] = {0.0f, 0.0f};
    for (int z = 0; z < splits; ++z) {
      float v[2];
      load_cols(planes + (z * m + p.row) * n, p.col, p.count, plane_pairs, v);
      acc[0] += v[0];
      acc[1] += v[1];
    }
    epilogue(epilogue.row(p.row), p.col, p.count, acc);
  }
}

// ---- the split plan ------------------------------------------------------------------------

// Split-K: slices of at least 8 stages, at most 32 planes, as many as one wave of the large
// tiles holds (two blocks an SM: their __launch_bounds__): the 3x3 wgrad of a 128-channel
// layer has 9 output tiles, so 29 slices on 132 SMs, 261 blocks. Rounding the count up
// instead (split_k_count) gave 8 slices of the 36 tiles of a 256-channel wgrad, 288 blocks:
// a second wave of 24 blocks, as long as the first (on an H200 that wgrad ran at 0.31x
// cuDNN's; docs/kernels.md). The count depends on the shape only (counted in large tiles
// whichever block shape runs), so the choice of block shape never changes a result's bits:
// the autotuner may pick either.
constexpr int64_t kMinSlice = 8 * kBK;
constexpr int kMaxSplits = 32;

// The plan counts the output's tiles of 128 x 128 (v4's large tiles, v5's only ones; each
// file asserts it), whatever block shape runs.
constexpr int64_t kPlanTile = 128;
inline int64_t plan_tiles(int64_t m, int64_t n) {
  return ((m + kPlanTile - 1) / kPlanTile) * ((n + kPlanTile - 1) / kPlanTile);
}

struct Gemm {
  const char* pass;
  int64_t m, n, k;
  int splits() const {
    return split_k_one_wave(plan_tiles(m, n), k, kMinSlice, kMaxSplits, kBlocksPerSm);
  }
  int64_t plane_floats() const { return splits() > 1 ? splits() * m * n : 0; }
};

// A GEMM's launch on tiles of tile_m x tile_n, K in stages of stage_k: the split plan (the
// shape's, whatever the kernel), launch(grid, k_slice) for the kernel, then the planes' sum
// through the epilogue when split.
template <class Epilogue, class Launch>
void launch_split(const Gemm& g, int tile_m, int tile_n, int stage_k, float* planes,
                  const Epilogue& epilogue, Launch launch) {
  const int splits = g.splits();
  CHECK(splits == 1 || reinterpret_cast<uintptr_t>(planes) % (2 * sizeof(float)) == 0,
        "the bf16 convolution's split-K planes must be 8-byte aligned (stored in pairs)");
  const int64_t k_slice = ((g.k + splits - 1) / splits + stage_k - 1) / stage_k * stage_k;
  launch(dim3(static_cast<unsigned>((g.m + tile_m - 1) / tile_m),
              static_cast<unsigned>((g.n + tile_n - 1) / tile_n), static_cast<unsigned>(splits)),
         k_slice);
  if (splits > 1)
    DDPM_LAUNCH(reduce_planes<Epilogue>, grid_for(g.m * ColumnPair::pairs(g.n)), kThreads)(
        g.m, g.n, splits, planes, epilogue);
}

// ---- v5 (conv2d_bf16_v5.cu) ----------------------------------------------------------------
// The GEMM g on wgmma in schedule t (Bf16Tiles::Wgmma, WgmmaTma, WgmmaPaired, WgmmaTall or
// WgmmaIm2col), for each pass's loaders and epilogue as the engine runs them: the forward,
// the dgrad (whole or by phase) and the wgrad, on fp32 or bf16 activations, the gathers
// through L1 or in L2 only.
// Defined there for exactly those (its explicit instantiations).
template <class LoadA, class LoadB, class Epilogue>
void run_v5(Bf16Tiles t, const Gemm& g, const LoadA& a, const LoadB& b,
            const Epilogue& epilogue, float* planes);

}  // namespace ddpm::cuda::conv_bf16
