// Convolution v4: implicit GEMM on bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation),
// written the way the fastest Ampere/Hopper GEMMs are (CUTLASS's multistage kernels, llm.c's
// matmuls): operands staged by cp.async in a 3-stage shared-memory pipeline, read into
// fragments by ldmatrix from XOR-swizzled tiles, gather offsets precomputed per tile.
// The same three GEMMs as v1-v3 (kernels/cuda/conv2d.cu has the algebra):
//
//   pass     C (M x N)                  A (M x K)               B (K x N)
//   forward  y  (N*OH*OW x Cout)        im2col(x)  K-major      w            MN-major
//   dgrad    dx (N*H*W x Cin)           gather(dy) K-major      w (per tap)  K-major
//   wgrad    dw (KH*KW*Cin8 x Cout8)    im2col(x)^T MN-major    dy           MN-major
//
// A strided convolution's dgrad runs by phase of dx (kernels/dgrad_phases.h): stride^2
// GEMMs, each over the dx pixels one set of taps reaches and only those taps (a stride-2
// 3x3 kernel gives a pixel 2.25 of its 9 taps on average; a GEMM over all pixels would
// multiply through all 9, 3/4 of them masked to zeros).
//
// "K-major" means consecutive k are consecutive in memory (channels, in NHWC), so a 16-byte
// cp.async carries 8 consecutive k of one row; "MN-major" means consecutive rows are (the
// wgrad's reduction runs over pixels, which are never contiguous in NHWC; the forward's B
// is the weights (KH, KW, Cin, Cout) as they are stored, k = (kh, kw, ci) rows of Cout).
// Each operand's shared tile keeps its global layout, and ldmatrix, plain or .trans, turns
// either into the fragments mma.sync wants. So there is one kernel, parameterised by two
// loaders and an epilogue; the passes differ only in those, and no operand is ever
// transposed in memory.
//
// bf16 operands. The engine's tensors are fp32, so each call first converts its operands
// (conversion kernels below: rounded to nearest even, channels padded with zeros to a
// multiple of 8 so that every 16-byte chunk is whole and aligned). This is what PyTorch's
// autocast does at every op; with bf16 activations end to end the conversions of x and dy
// disappear, and with the weights' bf16 copy (engine/weight_copy.h, given as w_bf16) so do
// w's: the forward and the dgrad read the copy in place (both of its channel counts a
// multiple of 8: every layer of the CIFAR-10 model but the first and the last) or pad it.
// Products of two bf16 values are exact in fp32 and are summed in fp32, so the result
// equals an fp32 convolution of the rounded operands up to the order of the sums.
//
// Block: a 128x128 tile of C, 256 threads = 8 warps as 2 (m) x 4 (n), each warp 64x32 =
// 4 x 4 mma tiles of 16x8 (64 fp32 accumulators per thread). K advances 32 per stage, two
// mma k-steps. Per stage and operand the tile is 128 x 32 bf16 = 8 KB; 3 stages of A and B
// = 48 KB of dynamic shared memory, the most a block may use without opting in, and two
// blocks fit an SM's 64K registers (ptxas, sm_90: 126-128 registers, no spills; the
// launch bounds hold every kernel to that). The same
// tiles with 4 stages (64 KB, opted in) keep one more tile in flight; a 64x64 block of 4
// warps (32x32 each) serves small outputs; a heuristic or a start-up autotuner picks per
// pass and size (BlockShape below).
//
// Pipeline (S stages): stages 0..S-2 are requested before the loop; iteration kt waits
// until tile kt has landed (cp.async.wait_group S-2: the S-2 newer groups may still be in
// flight), a __syncthreads makes it visible to all warps and also proves every warp has
// finished tile kt-1, whose stage then receives tile kt+S-1 while the warps multiply tile
// kt.
//
// Swizzle: ldmatrix reads 8 rows of 16 bytes at once; in a K-major tile rows are 64 bytes
// apart, so rows r and r+2 would share banks (4-way conflict), and in an MN-major tile rows
// are 256 bytes apart (8-way). Storing chunk c of row r at chunk c ^ f(r), with
// f(r) = (r/2) % 4 for 4 chunks per row and r % 8 for 8 or 16, puts the 8 rows of every
// ldmatrix (and every 8 consecutive cp.async chunks) in 8 different 16-byte bank groups.
//
// Gathers: each thread loads the same two rows (K-major) or the same 8 columns (MN-major)
// of every stage, so what depends on the row (pixel coordinates, the image's base address)
// is computed once per block, and what depends on k (tap, channel; or the pixel) is advanced
// by 32 per stage with a carry: no division per element or per stage. The forward's and the
// dgrad's K-major gathers go further (TapMask): a row is its window's origin (an offset)
// and a mask of the taps that land inside the image (for the dgrad: on dy), both fixed for
// the whole K loop, so a chunk per stage is a mask test and two adds; the tap's offset
// changes only on a carry. The K loop is issue-bound when
// its other instructions outnumber what the tensor cores take for its 32 mma (a few cycles
// each per SM sub-partition, which issues one instruction a cycle): scripts/sass_loops.py
// (cuobjdump -sass of the sm_90 build) counts, per stage and warp of the 128x128 3-stage
// kernel, 239 / 437 / 286 instructions in the forward's / dgrad's / wgrad's loop before
// the masks and the rest of docs/kernels.md's step 5, 157 / 224 / 207 now (32 of each are
// the mma; static counts, not timings). The same step also keeps shared memory as 32-bit
// window addresses (ptx::shared_address) with per-lane ldmatrix offsets computed before
// the loop, and the pipeline's stages as wrapping counters.
//
// Epilogue: each thread holds pairs of adjacent columns of C in registers and hands them
// over a row at a time, so what depends on the row (its address, its sample) is computed
// once per row, not per element, and each pair moves in one 8- or 4-byte access; the forward
// adds the bias, and for a ResBlock the time embedding (per sample) and the residual, in
// fp32, then stores once; dgrad and wgrad accumulate into the gradients (the tape's rule),
// the dgrad writing dx outright instead when it is dx's first contribution, the wgrad
// dropping the padded channels.
//
// Few output channels (at most 8: the U-Net's last layer, 128 -> 3): a GEMM tile 128
// columns wide would use 3 of them, so forward() and backward() hand such shapes to the
// direct kernels of conv2d_thin.cu (same operands, rounding and contracts) unless
// set_conv2d_bf16_thin(false).
//
// Split-K (any pass, when the output tiles cannot fill the GPU and a workspace is given):
// block z writes its slice's partial tile to a plane, and reduce_planes adds the planes in
// order and applies the epilogue. Deterministic: fixed summation order everywhere.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_thin.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/cuda/tensor_map.cuh"
#include "kernels/cuda/wgmma_tile.cuh"
#include "kernels/dgrad_phases.h"

namespace ddpm::cuda {

namespace {

using bf16_bits = uint16_t;

constexpr int kBK = 32;    // K per stage: two mma k-steps of 16
constexpr int kChunk = 8;  // bf16 per 16-byte cp.async

// The block tile, its warps and its pipeline depth. Large: 128x128, 8 warps of 64x32 (the
// most reuse per byte of shared memory), 3 stages of 16 KB: the 48 KB a block gets without
// opting in. Deep: the same tiles, 4 stages (64 KB, opted in; two blocks still fit the
// shared memory of an A100 or H100 SM, 164 / 228 KB, and registers allow no third anyway),
// for when two blocks of 8 warps cannot hide the load latency behind one tile of mma.
// Small: 64x64, 4 warps of 32x32, 3 stages (24 KB), for the layers whose outputs make too
// few large tiles to fill the GPU (the 8x8 and 4x4 maps: 2,048 rows at batch 128 are 16
// large tiles per 128 channels against 132 SMs). Wide warps: the large tile, 4 warps of
// 64x64 (128 accumulators a thread), 4 stages (64 KB): what ldmatrix reads per mma. A warp
// tile of 64 x 32 reads 4 A and 2 B ldmatrix.x4 (3 KB) per k-step of 16 mma, 21.8 FLOPs per
// byte; 64 x 64 reads 4 and 4 (4 KB) per 32 mma, 32.8. An SM's shared memory gives 128
// bytes a cycle, and Hopper's mma.sync takes on the order of 2,500 FLOPs a cycle an SM: at
// 21.8 the reads alone would need ~115 bytes a cycle to keep it busy, at 32.8 ~76. (An
// Ampere SM's mma.sync, half that rate, is served either way; CUTLASS's Ampere GEMMs use 64
// x 64 warp tiles.) The price is half the warps an SM: 2 blocks of 4 warps, where Large has
// 2 of 8, so each warp's 4 cp.async chunks a stage and its 32 mma a k-step must hide the
// latency with fewer warps beside it; the 4th stage is there for that. Each thread copies
// two 16-byte chunks of each operand per stage (four in the wide-warp tile), and no shape
// changes any output's summation order: each accumulator adds its k in order.
template <int kM, int kN, int kWarpsM, int kWarpsN, int kPipelineStages>
struct BlockShape {
  static constexpr int kBM = kM, kBN = kN, kStages = kPipelineStages;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = kM / kWarpsM, kWarpN = kN / kWarpsN;
  static constexpr int kMTiles = kWarpM / 16, kNTiles = kWarpN / 8;  // mma tiles per warp
  static constexpr int kWarpsAlongN = kWarpsN;
  static constexpr size_t kSmemBytes = kStages * (kM + kN) * kBK * 2;
  static_assert(kWarpN % 16 == 0, "B fragments come in pairs of n-tiles");
  static_assert(kStages >= 2, "one tile in flight while another is multiplied");
};
using LargeTiles = BlockShape<128, 128, 2, 4, 3>;
using DeepTiles = BlockShape<128, 128, 2, 4, 4>;
using SmallTiles = BlockShape<64, 64, 2, 2, 3>;
using WideWarpTiles = BlockShape<128, 128, 2, 2, 4>;
// The blocks an SM holds at once, at least (the kernel's launch bounds), for which the split
// plan sizes its one wave (below).
constexpr int kBlocksPerSm = 2;

int64_t round_up8(int64_t c) { return (c + 7) / 8 * 8; }

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

// Where a lane points ldmatrix, in bytes from its stage's tile, for a fragment of A (16 x 16
// at rows m0, k kk; matrices (m 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) in
// r[0..3], ptx.cuh) or for B's fragments of two n-tiles (k 16 x n 16 at n0, kk; r[0..1] the
// first's b[0..1], r[2..3] the second's; matrix q at n + 8 (q >> 1), k + 8 (q & 1)). The
// same for every stage, so the K loop adds them to the stage's address and nothing else.
template <class T>
__device__ int a_fragment_bytes(int m0, int kk, int lane) {
  const int q = lane / 8, i = lane % 8;
  if constexpr (T::kIsKMajor)  // rows are m
    return 2 * T::offset(m0 + lane % 16, (kk + 8 * (lane / 16)) / kChunk);
  else  // rows are k; matrix q at m + 8 (q & 1), k + 8 (q >> 1)
    return 2 * T::offset(kk + 8 * (q >> 1) + i, (m0 + 8 * (q & 1)) / kChunk);
}
template <class T>
__device__ int b_fragments_bytes(int n0, int kk, int lane) {
  const int q = lane / 8, i = lane % 8;
  if constexpr (T::kIsKMajor)  // rows are n
    return 2 * T::offset(n0 + 8 * (q >> 1) + i, (kk + 8 * (q & 1)) / kChunk);
  else  // rows are k
    return 2 * T::offset(kk + 8 * (q & 1) + i, (n0 + 8 * (q >> 1)) / kChunk);
}
// A K-major tile's fragments are read as they are, an MN-major tile's transposed.
template <class T>
__device__ void load_fragments(uint32_t (&r)[4], ptx::SharedAddress at) {
  if constexpr (T::kIsKMajor)
    ptx::ldmatrix_x4(r, at);
  else
    ptx::ldmatrix_x4_trans(r, at);
}

// ---- loaders: where each of a thread's two chunks comes from, stage after stage ----------
// K-major loaders: the thread's chunks are rows mn[0], mn[1] at one k; MN-major loaders: one
// column chunk mn at rows k[0], k[1]. chunk() gives the source of chunk j for the current
// stage and whether it holds data (else the copy writes zeros: outside the image, the
// matrix or the K slice; the source is then the operand's base, a valid address never
// read); advance() moves every chunk 32 along k. A flag beside the address, not a null
// address, because testing a pointer for null is two compares of 64 bits per chunk and
// stage, and choosing between it and the base two selects more.
struct Chunk {
  const bf16_bits* src;
  bool valid;
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

// k = (kh, kw, c) over KH x KW x C8 with c fastest, advanced 32 a stage with a carry. What
// depends on the tap (kh, kw), its element offset in the loader's layout and its two bits
// for the rows' masks (TapMask), changes only when the tap does, so it is recomputed only on
// a carry: a stage without one costs an add and a compare. The loader L gives
// tap_offset(kh, kw).
struct TapChannel {
  int kh = 0, kw = 0, c = 0;
  int k_left = 0;         // k_end - k: the chunk is past the K slice when <= 0
  int tap_offset = 0;     // L::tap_offset(kh, kw), elements
  uint32_t tap_bits = 0;  // TapMask::bits(kh, kw)
  template <class L>
  __device__ void start(const L& l, int64_t k0, int64_t k_end, int c8, int kw_n) {
    k_left = static_cast<int>(k_end - k0);
    c = static_cast<int>(k0 % c8);
    const int tap = static_cast<int>(k0 / c8);
    kh = tap / kw_n;
    kw = tap % kw_n;
    retap(l);
  }
  template <class L>
  __device__ void advance(const L& l, int c8, int kw_n) {
    k_left -= kBK;
    c += kBK;
    if (c < c8) return;
    do {
      c -= c8;
      if (++kw == kw_n) {
        kw = 0;
        ++kh;
      }
    } while (c >= c8);
    retap(l);
  }
  template <class L>
  __device__ void retap(const L& l) {
    tap_offset = l.tap_offset(kh, kw);
    tap_bits = TapMask::bits(kh, kw);
  }
};

// Forward A: im2col(x8)[m = (n, oh, ow)][k = (kh, kw, ci)], x8 (N, H, W, Cin8). Row m's
// window has its origin at input pixel (oh * stride - pad_top, ow * stride - pad_left), and
// tap (kh, kw) is (kh W + kw) Cin8 elements on from it.
struct ForwardA {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;
  const bf16_bits* x8;
  template <int kJ>
  struct State {
    int64_t origin[kJ];  // elements from x8 (negative at the image's top-left edge)
    uint32_t taps[kJ];   // TapMask; 0: the row is past M
    TapChannel k;
  };
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
    st.k.start(*this, k0, k_end, c8, s.kw);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const bool valid = st.k.k_left > 0 && TapMask::lands(st.taps[j], st.k.tap_bits);
    return {valid ? x8 + st.origin[j] + (st.k.tap_offset + st.k.c) : x8, valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const { st.k.advance(*this, c8, s.kw); }
};

// Dgrad A, of a stride-1 convolution (a strided convolution's dgrad runs by phase of dx,
// each phase the dgrad of a stride-1 convolution: kernels/dgrad_phases.h): the output
// gradient input pixel m = (n, ih, iw) received through tap (kh, kw), channel co:
// dy8[n, oh, ow, co] with oh = ih + pad_top - kh (zero outside [0, OH)). With
// (nh, nw) = (ih + pad_top, iw + pad_left), the row's origin is output pixel (nh, nw), tap
// (kh, kw) is -(kh OW + kw) Cout8 elements from it, and it lands when nh - kh is in
// [0, OH - 1] (and the same along w). OH and OW are dy's, given apart from the shape: a
// phase's shape describes its own pixels, and dy is the whole convolution's output.
struct DgradA {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;  // Cout8
  const bf16_bits* dy8;
  template <int kJ>
  struct State {
    int64_t origin[kJ];
    uint32_t taps[kJ];
    TapChannel k;
  };
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
    st.k.start(*this, k0, k_end, c8, s.kw);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const bool valid = st.k.k_left > 0 && TapMask::lands(st.taps[j], st.k.tap_bits);
    return {valid ? dy8 + st.origin[j] + (st.k.tap_offset + st.k.c) : dy8, valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const { st.k.advance(*this, c8, s.kw); }
};

// Dgrad B as (Cin rows) x (K = (kh, kw, co)) K-major: w8[kh, kw, ci, co], w8 (KH, KW, Cin,
// Cout8). Row ci starts at ci Cout8; k = tap Cout8 + co is at tap Cin Cout8 + co from there,
// which advances with k inside a tap and jumps (Cin - 1) Cout8 more at each carry into the
// next. So this loader needs no tap (no TapChannel): an offset, the channel and what is left
// of the K slice, three registers where the dgrad's A already holds a TapChannel of six.
struct DgradB {
  static constexpr bool kKMajor = true;
  Conv2dShape s;
  int c8;  // Cout8
  const bf16_bits* w8;
  template <int kJ>
  struct State {
    bool valid[kJ];
    int64_t origin[kJ];  // ci Cout8
    int at, c;           // k's offset from a row's origin, and its channel co
    int k_left;          // k_end - k
  };
  template <int kJ>
  __device__ State<kJ> start(const int64_t (&r)[kJ], int64_t k0, int64_t k_end) const {
    State<kJ> st;
    for (int j = 0; j < kJ; ++j) {
      st.valid[j] = r[j] < s.c_in;
      st.origin[j] = r[j] * c8;
    }
    st.c = static_cast<int>(k0 % c8);
    st.at = static_cast<int>(k0 / c8) * static_cast<int>(s.c_in) * c8 + st.c;
    st.k_left = static_cast<int>(k_end - k0);
    return st;
  }
  template <int kJ>
  __device__ Chunk chunk(const State<kJ>& st, int j) const {
    const bool valid = st.valid[j] && st.k_left > 0;
    return {valid ? w8 + st.origin[j] + st.at : w8, valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const {
    st.k_left -= kBK;
    st.at += kBK;
    st.c += kBK;
    while (st.c >= c8) {
      st.c -= c8;
      st.at += (static_cast<int>(s.c_in) - 1) * c8;
    }
  }
};

// Wgrad A, MN-major: rows k = pixel (n, oh, ow), columns m = (kh, kw, ci) of dw; the chunk
// is 8 channels of x8 at input pixel (oh * stride - pad_top + kh, ...). The thread's column,
// so its tap and channel, is fixed for the whole K loop; its two rows walk the pixels 32 at
// a time with a carry, and each keeps its sample's offset, so a chunk per stage is two
// multiply-adds for the pixel, an unsigned compare per side and 32-bit offset arithmetic
// (an image of H W Cin8 elements under 2^31: check_shape_limits), where it was a chain of
// 64-bit multiplies.
struct WgradA {
  static constexpr bool kKMajor = false;
  Conv2dShape s;
  int64_t oh_n, ow_n, m;
  int c8;  // Cin8
  const bf16_bits* x8;
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
    st.ci = static_cast<int>(col % c8);
    const int tap = static_cast<int>(col / c8);
    st.dh = tap / s.kw - s.pad_top;
    st.dw = tap % s.kw - s.pad_left;
    for (int j = 0; j < kJ; ++j) {
      st.k_left[j] = static_cast<int>(k_end - k0[j]);
      st.ow[j] = static_cast<int>(k0[j] % ow_n);
      st.oh[j] = static_cast<int>(k0[j] / ow_n % oh_n);
      st.image[j] = k0[j] / (ow_n * oh_n) * s.h * s.w * c8;
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
            valid};
  }
  template <int kJ>
  __device__ void advance(State<kJ>& st) const {
    for (int j = 0; j < kJ; ++j) {
      st.k_left[j] -= kBK;
      st.ow[j] += kBK;
      while (st.ow[j] >= ow_n) {
        st.ow[j] -= static_cast<int>(ow_n);
        if (++st.oh[j] == oh_n) {
          st.oh[j] = 0;
          st.image[j] += s.h * s.w * c8;
        }
      }
    }
  }
};

// B, MN-major, of a dense row-major matrix: rows k of `cols` bf16 (a multiple of 8), the
// column chunks at or past `cols` zeros. The wgrad's dy8 (N*OH*OW pixels, Cout8), and the
// forward's w8 (KH*KW*Cin8, Cout8): the weights as they are stored, k = (kh, kw, ci). Each
// of the thread's two rows is an offset advanced 32 rows a stage: an add, no multiply.
struct DenseRowsB {
  static constexpr bool kKMajor = false;
  int64_t cols;
  const bf16_bits* matrix;
  template <int kJ>
  struct State {
    bool valid;
    int64_t at[kJ];  // row j's chunk, elements from matrix
    int k_left[kJ];  // k_end - row j
  };
  template <int kJ>
  __device__ State<kJ> start(int64_t col, const int64_t (&k0)[kJ], int64_t k_end) const {
    State<kJ> st;
    st.valid = col < cols;
    for (int j = 0; j < kJ; ++j) {
      st.at[j] = k0[j] * cols + col;
      st.k_left[j] = static_cast<int>(k_end - k0[j]);
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
      st.at[j] += kBK * cols;
      st.k_left[j] -= kBK;
    }
  }
};

// The same matrix delivered by the copy engine (v5 only, Bf16Tiles::WgmmaTma): a tensor map
// of it (rows k x cols, boxes of 64 rows of k by 64 columns: an MN-major panel), and one
// thread asks for the tile's two panels a stage (request); columns past `cols` and rows
// past the matrix's k are zeros from the engine. No thread computes a chunk's address. A K
// slice ends on a stage boundary (v5's slices are whole 64-deep stages), so a box never
// holds rows of the next slice. The kernel takes it as a __grid_constant__ parameter: the
// copy reads the map where the launch put it.
struct DenseRowsTmaB {
  CUtensorMap map;
#if DDPM_HAS_SM90A_WGMMA  // (v5's kernel, their only user, is compiled empty elsewhere)
  static constexpr bool kKMajor = false;
  static constexpr bool kByCopyEngine = true;
  struct State {};
  template <int kJ>
  __device__ State start(int64_t, const int64_t (&)[kJ], int64_t) const { return {}; }
  __device__ void advance(State&) const {}
  // The 128 columns at col0 of rows k0..k0+63 into `tile` (the stage's B tile).
  __device__ void request(ptx::SharedAddress tile, int64_t col0, int64_t k0,
                          ptx::SharedAddress landed) const {
    sm90::tma_tile<Major::MN>(tile, &map, static_cast<int>(col0), static_cast<int>(k0), landed);
  }
#endif
};
// Dgrad B by the copy engine (v5 only, Bf16Tiles::WgmmaTma): DgradB's w8 (taps, Cin, Cout8)
// as a rank-3 tensor map, boxes of 128 rows (ci) of 64 co of one tap: a K-major tile, k =
// tap Cout8 + co. Needs Cout8 a multiple of 64, so that a 64-deep stage lies in one tap
// (every CIFAR-10 layer but the last, Cout = 3); thread 0 finds the stage's tap and first co
// with a division per stage. Rows past Cin are zeros from the engine.
struct DgradTmaB {
  CUtensorMap map;
  int c8;  // Cout8, a multiple of 64
#if DDPM_HAS_SM90A_WGMMA  // (as DenseRowsTmaB's)
  static constexpr bool kKMajor = true;
  static constexpr bool kByCopyEngine = true;
  struct State {};
  template <int kJ>
  __device__ State start(const int64_t (&)[kJ], int64_t, int64_t) const { return {}; }
  __device__ void advance(State&) const {}
  // Rows (ci) row0..row0+127 of k0..k0+63 into `tile` (the stage's B tile).
  __device__ void request(ptx::SharedAddress tile, int64_t row0, int64_t k0,
                          ptx::SharedAddress landed) const {
    const int tap = static_cast<int>(k0 / c8), co = static_cast<int>(k0 % c8);
    ptx::tma_load_3d(tile, &map, co, static_cast<int>(row0), tap, landed);
  }
#endif
};
// True for a loader whose tiles the copy engine brings (kByCopyEngine), false for the
// cp.async ones (which do not say).
template <class L, class = void>
struct ByCopyEngine : std::false_type {};
template <class L>
struct ByCopyEngine<L, std::void_t<decltype(L::kByCopyEngine)>>
    : std::bool_constant<L::kByCopyEngine> {};

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

// wgrad: dw += C (or dw = C) without the padded channels: C's rows are (tap, ci < Cin8),
// its columns co < Cout8; dw is (taps, Cin, Cout).
struct AccumulateWgrad {
  float* dw;
  int64_t c_in, c8, c_out;
  bool add;     // false: the first contribution to dw (kernels/grad_write.h)
  bool paired;  // rows_pair(c_out, dw)
  struct Row {
    float* at;  // dw's row, or null for a padded input channel
  };
  __device__ Row row(int64_t r) const {
    const int64_t tap = r / c8, ci = r % c8;
    return {ci < c_in ? dw + (tap * c_in + ci) * c_out : nullptr};
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

// ---- the kernel ----------------------------------------------------------------------------

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

// grid (M tiles, N tiles, splits). Block z multiplies k in [z * k_slice, (z+1) * k_slice)
// and, when splitting, writes its partial tile to planes + z * m * n.
// Launch bounds: two blocks an SM, the occupancy the 128x128 tiles are sized for. At 256
// threads that caps a thread at 128 registers, so a change that needs more spills (which
// -Xptxas -v shows) instead of silently halving the occupancy: a draft of the masked
// loaders took the dgrad to 156 registers, and nothing else would have said so. (At the
// wide-warp tile's 128 threads the cap is 255.)
template <class Block, class LoadA, class LoadB, class Epilogue>
__global__ void __launch_bounds__(Block::kThreads, kBlocksPerSm)
conv_gemm_bf16(int64_t m, int64_t n, int64_t k, int64_t k_slice, LoadA a, LoadB b,
               Epilogue epilogue, float* planes) {
#if DDPM_HAS_SM80_TENSOR_CORES
  constexpr int kBM = Block::kBM, kBN = Block::kBN, kWarpM = Block::kWarpM,
                kWarpN = Block::kWarpN, kMT = Block::kMTiles, kNT = Block::kNTiles,
                kStages = Block::kStages;
  using TileA = Tile<LoadA::kKMajor, kBM, Block::kThreads>;
  using TileB = Tile<LoadB::kKMajor, kBN, Block::kThreads>;
  DDPM_DYNAMIC_SHARED(bf16_bits, smem);  // [kStages][TileA] then [kStages][TileB]
  // The tiles as shared-window addresses (ptx.cuh), stage s of A at a_tiles + s kABytes
  constexpr int kABytes = 2 * TileA::kElements, kBBytes = 2 * TileB::kElements;
  const ptx::SharedAddress a_tiles = ptx::computed_once(ptx::shared_address(smem));
  const ptx::SharedAddress b_tiles = a_tiles + kStages * kABytes;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / Block::kWarpsAlongN, wn = warp % Block::kWarpsAlongN;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t k_begin = blockIdx.z * k_slice;
  const int64_t k_end = k_begin + k_slice < k ? k_begin + k_slice : k;
  const int k_tiles = k_end > k_begin ? static_cast<int>((k_end - k_begin + kBK - 1) / kBK) : 0;

  // where this thread's chunks sit in the tiles (bytes), and the loaders' state for them
  constexpr int kJA = TileA::kChunksPerThread, kJB = TileB::kChunksPerThread;
  int a_off[kJA], b_off[kJB];
  for (int j = 0; j < kJA; ++j)
    a_off[j] = 2 * TileA::offset(TileA::row_of(tid, j), TileA::chunk_of(tid, j));
  for (int j = 0; j < kJB; ++j)
    b_off[j] = 2 * TileB::offset(TileB::row_of(tid, j), TileB::chunk_of(tid, j));
  // where this lane points each ldmatrix of a stage (bytes), per 16-deep k-step
  int a_frag[2][kMT], b_frag[2][kNT / 2];
#pragma unroll
  for (int s = 0; s < 2; ++s) {
#pragma unroll
    for (int i = 0; i < kMT; ++i)
      a_frag[s][i] = a_fragment_bytes<TileA>(wm * kWarpM + 16 * i, 16 * s, lane);
#pragma unroll
    for (int jj = 0; jj < kNT / 2; ++jj)
      b_frag[s][jj] = b_fragments_bytes<TileB>(wn * kWarpN + 16 * jj, 16 * s, lane);
  }
  auto a_state = start_chunks<TileA>(a, tid, row0, k_begin, k_end);
  auto b_state = start_chunks<TileB>(b, tid, col0, k_begin, k_end);
  auto load_stage = [&](int stage) {
#pragma unroll
    for (int j = 0; j < kJA; ++j) {
      const Chunk ca = a.chunk(a_state, j);
      ptx::cp_async_16(a_tiles + stage * kABytes + a_off[j], ca.src, ca.valid);
    }
#pragma unroll
    for (int j = 0; j < kJB; ++j) {
      const Chunk cb = b.chunk(b_state, j);
      ptx::cp_async_16(b_tiles + stage * kBBytes + b_off[j], cb.src, cb.valid);
    }
    a.advance(a_state);
    b.advance(b_state);
  };

  float acc[kMT][kNT][4] = {};  // [m16 tile][n8 tile][fragment element]
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s);
    ptx::cp_async_commit();  // possibly empty: the group count stays uniform
  }
  // The stage tile kt is read from, and the one tile kt + kStages - 1 is loaded into: kept
  // as counters that wrap, where kt % kStages is a multiply and a shift per use.
  int read_stage = 0, write_stage = kStages - 1;
  for (int kt = 0; kt < k_tiles; ++kt) {
    ptx::cp_async_wait<kStages - 2>();  // tile kt has landed (this thread's chunks)
    __syncthreads();                    // ... everyone's, and tile kt-1 is consumed
    if (kt + kStages - 1 < k_tiles) load_stage(write_stage);
    ptx::cp_async_commit();
    const ptx::SharedAddress at = a_tiles + read_stage * kABytes;
    const ptx::SharedAddress bt = b_tiles + read_stage * kBBytes;
    read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
    write_stage = write_stage + 1 == kStages ? 0 : write_stage + 1;
#pragma unroll
    for (int s = 0; s < 2; ++s) {  // the two 16-deep k-steps of the stage
      uint32_t af[kMT][4], bf[kNT][2];
#pragma unroll
      for (int i = 0; i < kMT; ++i) load_fragments<TileA>(af[i], at + a_frag[s][i]);
#pragma unroll
      for (int jj = 0; jj < kNT / 2; ++jj) {
        uint32_t r[4];
        load_fragments<TileB>(r, bt + b_frag[s][jj]);
        bf[2 * jj][0] = r[0];
        bf[2 * jj][1] = r[1];
        bf[2 * jj + 1][0] = r[2];
        bf[2 * jj + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNT; ++j) ptx::mma_bf16_16816(acc[i][j], af[i], bf[j]);
    }
  }
  ptx::cp_async_wait<0>();  // no copy may land in shared memory after the block is gone

  // Fragment element e of tile (i, j) is C[g + 8 (e >> 1)][2 t + (e & 1)] of the tile: each
  // thread holds, per m tile, two rows (h = e >> 1) of one adjacent column pair per n tile.
  const int g = lane / 4, t = lane % 4;
  float* const plane = gridDim.z > 1 ? planes + blockIdx.z * m * n : nullptr;
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = row0 + wm * kWarpM + 16 * i + g + 8 * h;
      if (row >= m) continue;
      const auto out_row = plane ? typename Epilogue::Row{} : epilogue.row(row);
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        const float v[2] = {acc[i][j][2 * h], acc[i][j][2 * h + 1]};
        hand_over(epilogue, out_row, plane, row, col0 + wn * kWarpN + 8 * j + 2 * t, n, v);
      }
    }
#endif
}

// ---- v5: the three passes on Hopper's wgmma (sm_90a) ---------------------------------------
// wgmma_tile.cuh's 128 x 128 tile (2 warpgroups, 64-deep stages in the 128-byte swizzle,
// products left in flight behind the next loads; gemm_sm90.cu is the same pipeline on a
// plain GEMM) fed by v4's own loaders. A 64-deep stage is two of their 32-deep steps: the
// thread keeps the chunks of v4's 128-wide tile (Tile<kKMajor, 128, 256>; a K-major one's
// rows permuted against bank conflicts, WgmmaHalf), placed in the stage's first half, then
// in its second 32 further along k, so the gathers, the tap masks and the carries are v4's
// unchanged. wgmma reads either layout (its trans bits), so each pass keeps v4's operands
// as they are: the forward's im2col(x) K-major and the weights
// MN-major as stored, the dgrad's both K-major, the wgrad's both MN-major. Split-K as v4
// (planes, reduce_planes), in whole 64-deep stages. The tensor cores' own order of the 16
// products of a k-step is theirs, so v5's bits need not be v4's: each is deterministic.

// The chunks of a half stage a thread copies: those of v4's 128-wide tile, but for the rows
// of a K-major one, permuted within each warp's 8 so that lanes 8q..8q+7 (one phase of a
// warp's 16-byte stores) take rows r and r ^ 4, not r and r + 1: the hardware's swizzle
// (chunk c of row r at c ^ (r % 8)) then spreads their 4 + 4 chunks over the 8 bank groups,
// where rows r and r + 1 share 4 groups (2 wavefronts a phase: BankConflicts counts them).
// An MN-major half (2 rows of k of 16 chunks a warp) is conflict-free as v4 maps it.
// With Bf16Tiles::WgmmaTma the copy engine brings B's tile instead where B allows it
// (DenseRowsTmaB: the forward's weights, the wgrad's dy; DgradTmaB: the dgrad's weights
// when Cout8 is a multiple of 64): thread 0 requests it a stage onto the stage's mbarrier
// (16 KB expected), and iteration t waits for the barrier's phase t / 4 as well as for the
// thread's own cp.async copies of A, before the same __syncthreads. The same tile in shared
// memory, so the same bits as v5's cp.async B.
// With Bf16Tiles::WgmmaPaired the ring has 3 stages, not 4 (96 KB), so that two blocks share
// an SM (wgmma_tile.cuh: sm90::blocks_an_sm; 128 registers a thread at most): each block
// keeps one tile of loads in flight where a lone one keeps two, and one block's first loads
// and its epilogue overlap the other's products, where a lone block leaves the tensor cores
// idle through both. The same tiles and products, so the same bits.
template <bool kKMajor>
struct WgmmaHalf : Tile<kKMajor, sm90::kTile, sm90::kThreads> {
  using V4 = Tile<kKMajor, sm90::kTile, sm90::kThreads>;
  __device__ static int row_of(int tid, int j) {
    const int r = V4::row_of(tid, j);
    if constexpr (!kKMajor) return r;
    return (r & ~7) | (r & 1) << 2 | (r >> 1 & 3);
  }
};

// The layout of a loader's operand, and where thread tid's chunk j of half h of a stage
// goes (bytes from the operand's tile): its position (mn, k) in the half, k 32 h further on.
template <class L>
constexpr Major kMajorOf = L::kKMajor ? Major::K : Major::MN;
template <class L>
__device__ int wgmma_chunk_bytes(int tid, int j, int h) {
  using T = WgmmaHalf<L::kKMajor>;
  const int mn = L::kKMajor ? T::row_of(tid, j) : kChunk * T::chunk_of(tid, j);
  const int k = L::kKMajor ? kChunk * T::chunk_of(tid, j) : T::row_of(tid, j);
  return sm90::TileLayout<kMajorOf<L>>::offset(mn, kBK * h + k);
}

// A ring of kRing stages: sm90::kStages, or sm90::kPairedStages (two blocks an SM).
template <int kRing, class LoadA, class LoadB, class Epilogue>
__global__ void __launch_bounds__(sm90::kThreads, sm90::blocks_an_sm(kRing))
conv_gemm_wgmma(int64_t m, int64_t n, int64_t k, int64_t k_slice, LoadA a,
                const __grid_constant__ LoadB b, Epilogue epilogue, float* planes) {
#if DDPM_HAS_SM90A_WGMMA
  constexpr bool kEngineB = ByCopyEngine<LoadB>::value;
  DDPM_DYNAMIC_SHARED(bf16_bits, smem);  // (v4's declaration: one per translation unit)
  const ptx::SharedAddress tiles = ptx::computed_once(sm90::first_stage(smem));
  const sm90::StageBarriers<kRing> landed(tiles);  // used when B is the engine's
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * sm90::kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * sm90::kTile;
  const int64_t k_begin = blockIdx.z * k_slice;
  const int64_t k_end = k_begin + k_slice < k ? k_begin + k_slice : k;
  const int k_tiles =
      k_end > k_begin ? static_cast<int>((k_end - k_begin + sm90::kTileK - 1) / sm90::kTileK) : 0;

  // the thread's chunk j of half h of a stage, in bytes from its A and its B tile
  int a_off[2][2], b_off[2][2];
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 2; ++j) {
      a_off[h][j] = wgmma_chunk_bytes<LoadA>(tid, j, h);
      b_off[h][j] = wgmma_chunk_bytes<LoadB>(tid, j, h);
    }
  auto a_state = start_chunks<WgmmaHalf<LoadA::kKMajor>>(a, tid, row0, k_begin, k_end);
  auto b_state = start_chunks<WgmmaHalf<LoadB::kKMajor>>(b, tid, col0, k_begin, k_end);
  if constexpr (kEngineB) {
    if (tid == 0) landed.init();
    __syncthreads();
  }
  // the loaders only move forward: tiles are requested in order, each once
  auto request = [&](int tile) {
    if (tile < k_tiles) {
      const ptx::SharedAddress stage = tiles + (tile % kRing) * sm90::kStageBytes;
      if constexpr (kEngineB) {
        if (tid == 0) {
          const ptx::SharedAddress bar = landed.of(tile);
          ptx::mbarrier_arrive_expect_tx(bar, sm90::kTileBytes);
          b.request(stage + sm90::kTileBytes, col0, k_begin + int64_t{tile} * sm90::kTileK, bar);
        }
      }
      for (int h = 0; h < 2; ++h) {
        for (int j = 0; j < 2; ++j) {
          const Chunk ca = a.chunk(a_state, j);
          ptx::cp_async_16(stage + a_off[h][j], ca.src, ca.valid);
          if constexpr (!kEngineB) {
            const Chunk cb = b.chunk(b_state, j);
            ptx::cp_async_16(stage + sm90::kTileBytes + b_off[h][j], cb.src, cb.valid);
          }
        }
        a.advance(a_state);
        b.advance(b_state);
      }
    }
    ptx::cp_async_commit();  // possibly empty: the group count stays uniform
  };
  for (int t = 0; t < kRing - 2; ++t) request(t);

  float d[64];
  for (float& v : d) v = 0.0f;
  const int warpgroup = tid / 128;
  for (int t = 0; t < k_tiles; ++t) {
    ptx::cp_async_wait<kRing - 3>();  // tile t has landed (this thread's chunks)
    ptx::fence_proxy_async_shared();  // ... where the tensor cores read
    if constexpr (kEngineB)           // ... and the engine's B
      landed.wait(t);
    __syncthreads();                  // ... everyone's; tile t-2's products are done
    request(t + kRing - 2);           // into tile t-2's stage
    sm90::multiply_stage<kMajorOf<LoadA>, kMajorOf<LoadB>>(
        d, tiles + (t % kRing) * sm90::kStageBytes, warpgroup, t > 0);
  }
  sm90::finish(d);
  ptx::cp_async_wait<0>();  // (only empty groups are left)

  const sm90::Fragment f(tid);
  float* const plane = gridDim.z > 1 ? planes + blockIdx.z * m * n : nullptr;
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // unrolled: d's index must be a constant, or d is in memory
    const int64_t row = row0 + f.row(h);
    if (row >= m) continue;
    const auto out_row = plane ? typename Epilogue::Row{} : epilogue.row(row);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float v[2] = {d[4 * j + 2 * h], d[4 * j + 2 * h + 1]};
      hand_over(epilogue, out_row, plane, row, col0 + f.col(j), n, v);
    }
  }
#endif
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

// ---- conversions to bf16 -----------------------------------------------------------------

// dst (rows, c8) = bf16(src (rows, c)), channels c..c8-1 zero; a bf16 src is copied.
template <class S>
__global__ void to_bf16_padded(int64_t rows, int64_t c, int64_t c8, const S* src,
                               bf16_bits* dst) {
  DDPM_GRID_STRIDE(i, rows * c8) {
    const int64_t r = i / c8, j = i % c8;
    dst[i] = j < c ? bf16_round(load(src, r * c + j)) : bf16_bits{0};
  }
}

// w8 (taps, Cin8, Cout8) = bf16(w (taps, Cin, Cout)), both channel counts padded with zeros;
// w fp32, or bf16 already (the weights' copy: then the bits are moved, not rounded).
template <class S>
__global__ void weights_to_bf16_padded(int64_t taps, int64_t c_in, int64_t ci8, int64_t c_out,
                                       int64_t co8, const S* w, bf16_bits* w8) {
  DDPM_GRID_STRIDE(i, taps * ci8 * co8) {
    const int64_t co = i % co8, ci = i / co8 % ci8, tap = i / (co8 * ci8);
    w8[i] = ci < c_in && co < c_out ? bf16_round(load(w, (tap * c_in + ci) * c_out + co))
                                    : bf16_bits{0};
  }
}

// w8 (taps, Cin, Cout8) = bf16(w (taps, Cin, Cout)) with the taps in phase order
// (kernels/dgrad_phases.h: each phase of a strided dgrad reads its taps as one kernel),
// Cout padded with zeros; w fp32, or the weights' bf16 copy (moved, not rounded).
template <class S>
__global__ void weights_by_phase(Conv2dShape s, int64_t co8, const S* w, bf16_bits* w8) {
  DDPM_GRID_STRIDE(i, int64_t{s.kh} * s.kw * s.c_in * co8) {
    const int64_t co = i % co8, ci = i / co8 % s.c_in, place = i / (co8 * s.c_in);
    const int64_t tap = phase_ordered_tap(s, place);
    w8[i] = co < s.c_out ? bf16_round(load(w, (tap * s.c_in + ci) * s.c_out + co))
                         : bf16_bits{0};
  }
}

// ---- host side ----------------------------------------------------------------------------

// Past 48 KB a kernel opts in to its dynamic shared memory (launch_gemm, through
// opt_in_shared_memory); every sm_80+ GPU allows at least 99 KB per block (163 KB on A100,
// 227 KB on H100).
static_assert(DeepTiles::kSmemBytes <= 99 * 1024 && WideWarpTiles::kSmemBytes <= 99 * 1024,
              "more than every sm_80+ GPU allows a block");

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

template <class Block>
int64_t tiles_of(int64_t m, int64_t n) {
  return ((m + Block::kBM - 1) / Block::kBM) * ((n + Block::kBN - 1) / Block::kBN);
}

struct Gemm {
  const char* pass;
  int64_t m, n, k;
  int splits() const {
    return split_k_one_wave(tiles_of<LargeTiles>(m, n), k, kMinSlice, kMaxSplits, kBlocksPerSm);
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

template <class Block, class LoadA, class LoadB, class Epilogue>
void launch_gemm(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  auto launch = [&](dim3 grid, int64_t k_slice) {
    opt_in_shared_memory(conv_gemm_bf16<Block, LoadA, LoadB, Epilogue>, Block::kSmemBytes);
    DDPM_LAUNCH((conv_gemm_bf16<Block, LoadA, LoadB, Epilogue>), grid, Block::kThreads,
                Block::kSmemBytes)(g.m, g.n, g.k, k_slice, a, b, epilogue, planes);
  };
  launch_split(g, Block::kBM, Block::kBN, kBK, planes, epilogue, launch);
}

Bf16Tiles g_tiles = Bf16Tiles::Heuristic;
// Shapes of at most 8 output channels to the direct kernels (conv2d_thin.cu), not the GEMM.
bool g_thin = true;

// The autotuners' choices, per version (v4 or v5), pass and GEMM size.
using TunedKey = std::tuple<int, std::string, int64_t, int64_t, int64_t>;
std::map<TunedKey, Bf16Tiles>& tuned() {
  static std::map<TunedKey, Bf16Tiles> choices;
  return choices;
}

// What each autotuner times, in its order: v4's block shapes (each a BlockShape above), and
// v5's three schedules (Bf16Tiles::WgmmaAutotune). Within each list every choice gives the
// same bits, so a tuned run is as reproducible as an untuned one.
constexpr Bf16Tiles kTunable[] = {Bf16Tiles::Large, Bf16Tiles::Deep, Bf16Tiles::Small,
                                  Bf16Tiles::WideWarps};
constexpr Bf16Tiles kTunableV5[] = {Bf16Tiles::Wgmma, Bf16Tiles::WgmmaTma,
                                    Bf16Tiles::WgmmaPaired};

const char* tiles_name(Bf16Tiles t) {
  return t == Bf16Tiles::Small         ? "64x64"
         : t == Bf16Tiles::Deep        ? "128x128 4-stage"
         : t == Bf16Tiles::WideWarps   ? "128x128 64x64-warp"
         : t == Bf16Tiles::Wgmma       ? "4 stages"
         : t == Bf16Tiles::WgmmaTma    ? "4 stages, TMA B"
         : t == Bf16Tiles::WgmmaPaired ? "3 stages, 2 blocks an SM"
                                       : "128x128";
}

// v5: v4's split plan, its slices whole 64-deep stages; a ring of kRing stages.
template <int kRing = sm90::kStages, class LoadA, class LoadB, class Epilogue>
void launch_wgmma(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  if (g.m == 0 || g.n == 0) return;
  CHECK(gemm_sm90_available(), "conv v5 (wgmma) " << sm90a_missing());
  constexpr size_t kBytes = sm90::shared_bytes_with_barriers(1, kRing);  // TMA B's barriers
  auto launch = [&](dim3 grid, int64_t k_slice) {
    reserve_shared_memory(conv_gemm_wgmma<kRing, LoadA, LoadB, Epilogue>, kBytes,
                          "conv v5 (wgmma)", "no Hopper GPU has less", sm90::blocks_an_sm(kRing));
    DDPM_LAUNCH((conv_gemm_wgmma<kRing, LoadA, LoadB, Epilogue>), grid, sm90::kThreads, kBytes)(
        g.m, g.n, g.k, k_slice, a, b, epilogue, planes);
  };
  launch_split(g, sm90::kTile, sm90::kTile, sm90::kTileK, planes, epilogue, launch);
}

template <class LoadA, class LoadB, class Epilogue>
void launch_tiles(Bf16Tiles t, const Gemm& g, LoadA a, LoadB b, Epilogue epilogue,
                  float* planes) {
  if (t == Bf16Tiles::WgmmaTma && g.k > 0) {  // B by the copy engine, where it can
    if constexpr (std::is_same_v<LoadB, DenseRowsB>) {
      const DenseRowsTmaB engine{bf16_tensor_map_sw128(b.matrix, g.k, b.cols, sm90::kTileK,
                                                       "conv v5 (wgmma, TMA B)")};
      launch_wgmma(g, a, engine, epilogue, planes);
      return;
    }
    if constexpr (std::is_same_v<LoadB, DgradB>) {
      if (b.c8 % sm90::kTileK == 0) {
        const int64_t taps = int64_t{b.s.kh} * b.s.kw;
        const DgradTmaB engine{
            bf16_planes_tensor_map_sw128(b.w8, taps, b.s.c_in, b.c8, sm90::kTile,
                                         "conv v5 (wgmma, TMA B) dgrad"),
            b.c8};
        launch_wgmma(g, a, engine, epilogue, planes);
        return;
      }
    }
  }
  if (t == Bf16Tiles::Wgmma || t == Bf16Tiles::WgmmaTma) {
    launch_wgmma(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::WgmmaPaired) {
    launch_wgmma<sm90::kPairedStages>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::Small) {
    launch_gemm<SmallTiles>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::Deep) {
    launch_gemm<DeepTiles>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::WideWarps) {
    launch_gemm<WideWarpTiles>(g, a, b, epilogue, planes);
  } else {
    launch_gemm<LargeTiles>(g, a, b, epilogue, planes);
  }
}

// Median of 5 timed runs (kAutotuneTimedRuns, after one warm-up: kAutotuneWarmUps) of
// every choice (v4's block shapes, or v5's schedules) on this call's operands, with the
// call's own epilogue storing into scratch memory (Epilogue::into: the real output may be
// accumulated into, and must not be touched; rows_reached sizes it, a strided dgrad's
// phases writing rows spread over all of dx), so what is timed is the kernel that will
// run; prints the times and the choice.
template <class LoadA, class LoadB, class Epilogue, size_t kChoices>
Bf16Tiles autotune(const Bf16Tiles (&choices)[kChoices], const char* version, const Gemm& g,
                   LoadA a, LoadB b, const Epilogue& epilogue, float* planes) {
  // every epilogue's rows are n wide (its ld); fp32, the widest output
  float* scratch = nullptr;
  CUDA_CHECK(cudaMalloc(&scratch, epilogue.rows_reached(g.m) * g.n * sizeof(float)));
  const Epilogue discard = epilogue.into(scratch);
  auto time_ms = [&](Bf16Tiles t) {
    for (int r = 0; r < kAutotuneWarmUps; ++r) launch_tiles(t, g, a, b, discard, planes);
    std::vector<double> ms;
    for (int r = 0; r < kAutotuneTimedRuns; ++r) {
      CUDA_CHECK(cudaDeviceSynchronize());
      const auto t0 = std::chrono::steady_clock::now();
      launch_tiles(t, g, a, b, discard, planes);
      CUDA_CHECK(cudaDeviceSynchronize());
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                       .count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  std::printf("conv %s autotune: %s %lld x %lld x %lld (K in %d slices):", version, g.pass,
              static_cast<long long>(g.m), static_cast<long long>(g.n),
              static_cast<long long>(g.k), g.splits());
  Bf16Tiles pick = choices[0];
  double best = std::numeric_limits<double>::infinity();
  for (Bf16Tiles t : choices) {
    const double ms = time_ms(t);
    std::printf(" %s %.3f ms,", tiles_name(t), ms);
    if (ms < best) {
      pick = t;
      best = ms;
    }
  }
  CUDA_CHECK(cudaFree(scratch));
  std::printf(" -> %s\n", tiles_name(pick));
  return pick;
}

template <class LoadA, class LoadB, class Epilogue>
void run_gemm(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  if (g.m == 0 || g.n == 0) return;
  CHECK(compute_capability() >= 80, "the bf16 tensor-core convolution (v4) needs sm_80 or later, "
                                    "this device is sm_" << compute_capability());
  Bf16Tiles pick = g_tiles;
  if (pick == Bf16Tiles::Heuristic) {  // large tiles when they alone fill the GPU
    pick = tiles_of<LargeTiles>(g.m, g.n) >= sm_count() ? Bf16Tiles::Large : Bf16Tiles::Small;
  } else if (pick == Bf16Tiles::Autotune || pick == Bf16Tiles::WgmmaAutotune) {
    const bool v5 = pick == Bf16Tiles::WgmmaAutotune;
    const TunedKey key{v5 ? 5 : 4, std::string(g.pass), g.m, g.n, g.k};
    auto it = tuned().find(key);
    if (it == tuned().end())
      it = tuned()
               .emplace(key, v5 ? autotune(kTunableV5, "v5", g, a, b, epilogue, planes)
                                : autotune(kTunable, "v4", g, a, b, epilogue, planes))
               .first;
    pick = it->second;
  }
  launch_tiles(pick, g, a, b, epilogue, planes);
}

// Workspace carving: bf16 buffers and fp32 planes, each 256-byte aligned, in floats.
class Carve {
 public:
  explicit Carve(float* base) : base_(base) {}
  bf16_bits* bf16(int64_t count) { return reinterpret_cast<bf16_bits*>(take((count + 1) / 2)); }
  float* floats(int64_t count) { return take(count); }
  int64_t used() const { return used_; }

 private:
  float* take(int64_t floats) {  // null for nothing: never a pointer past the end
    float* p = base_ && floats > 0 ? base_ + used_ : nullptr;
    used_ += (floats + 63) / 64 * 64;
    return p;
  }
  float* base_;
  int64_t used_ = 0;
};

int64_t taps(const Conv2dShape& s) { return static_cast<int64_t>(s.kh) * s.kw; }

Gemm forward_gemm(const Conv2dShape& s) {
  return {"forward", s.n * s.out_h() * s.out_w(), s.c_out, taps(s) * round_up8(s.c_in)};
}
Gemm dgrad_gemm(const Conv2dShape& s) {
  return {"dgrad", s.n * s.h * s.w, s.c_in, taps(s) * round_up8(s.c_out)};
}
// A strided dgrad runs by phase (kernels/dgrad_phases.h): phase p's GEMM, the dgrad of its
// stride-1 convolution (K = its live taps x Cout8; 0 when none reach it).
Gemm phase_gemm(const DgradPhase& ph) {
  const Gemm g = dgrad_gemm(ph.shape);
  return {"dgrad by phase", g.m, g.n, g.k};
}
// The planes the dgrad's split-K needs: its own, or the largest of its phases'.
int64_t dgrad_plane_floats(const Conv2dShape& s) {
  if (s.stride == 1) return dgrad_gemm(s).plane_floats();
  int64_t most = 0;
  for (int p = 0; p < s.stride * s.stride; ++p)
    most = std::max(most, phase_gemm(dgrad_phase(s, p)).plane_floats());
  return most;
}
Gemm wgrad_gemm(const Conv2dShape& s) {
  return {"wgrad", taps(s) * round_up8(s.c_in), round_up8(s.c_out), s.n * s.out_h() * s.out_w()};
}

// What the loaders assume: masks of 16 taps a side (TapMask); one image's elements, in and
// out, and the pixels of the batch (the wgrad's K; the dgrad's rows by phase, PhaseRows)
// counted in an int (32-bit offsets within a sample, k_left).
void check_shape_limits(const Conv2dShape& s) {
  constexpr int kMax = TapMask::kMaxTaps;
  CHECK(s.kh <= kMax && s.kw <= kMax, "the bf16 tensor-core convolution (v4) takes kernels up to "
                                          << kMax << " x " << kMax << ", got " << s.kh << " x "
                                          << s.kw);
  const int64_t limit = int64_t{1} << 31;
  CHECK(s.h * s.w * round_up8(s.c_in) < limit &&
            s.out_h() * s.out_w() * round_up8(s.c_out) < limit &&
            s.n * s.out_h() * s.out_w() < limit && s.n * s.h * s.w < limit,
        "the bf16 tensor-core convolution (v4) takes images of fewer than 2^31 elements and "
        "batches of fewer than 2^31 pixels in and out, got "
            << s.n << " x " << s.h << " x " << s.w << " x " << s.c_in << " in, " << s.out_h()
            << " x " << s.out_w() << " x " << s.c_out << " out");
}

// Both passes lay the workspace out the same way whether or not `base` is null (sizing).
struct ForwardBuffers {
  bf16_bits *x8, *w8;
  float* planes;
  int64_t floats;
  ForwardBuffers(const Conv2dShape& s, float* base) {
    Carve c(base);
    x8 = c.bf16(s.n * s.h * s.w * round_up8(s.c_in));
    w8 = c.bf16(taps(s) * round_up8(s.c_in) * round_up8(s.c_out));
    planes = c.floats(forward_gemm(s).plane_floats());
    floats = c.used();
  }
};

// The bias gradient of bf16 dy: column sums over the N*OH*OW rows (elementwise.cuh).
BroadcastShape bias_rows(const Conv2dShape& s) {
  return BroadcastShape{1, s.n * s.out_h() * s.out_w(), s.c_out, false};
}

struct BackwardBuffers {
  bf16_bits *x8, *dy8, *w8;
  float *planes, *bias_sums, *thin_planes;
  int64_t floats;
  bool placed;  // carved from a workspace (not only sized)
  BackwardBuffers(const Conv2dShape& s, float* base) : placed(base != nullptr) {
    Carve c(base);
    x8 = c.bf16(s.n * s.h * s.w * round_up8(s.c_in));
    dy8 = c.bf16(s.n * s.out_h() * s.out_w() * round_up8(s.c_out));
    w8 = c.bf16(taps(s) * s.c_in * round_up8(s.c_out));
    planes = c.floats(std::max(dgrad_plane_floats(s), wgrad_gemm(s).plane_floats()));
    bias_sums = c.floats(broadcast_add_backward_workspace(bias_rows(s)));  // bf16 dy's db
    thin_planes = c.floats(conv2d_thin_applies(s) ? conv2d_thin_backward_workspace(s) : 0);
    floats = c.used();
  }
};

// No padding needed (fp32 with channels a multiple of 8): the flat conversion, whose
// elements need no division to find their row (elementwise.cu).
template <class S>
void convert(int64_t rows, int64_t c, const S* src, bf16_bits* dst) {
  if constexpr (std::is_same_v<S, float>) {
    if (c % kChunk == 0) return to_bf16_bits(rows * c, src, dst);
  }
  DDPM_LAUNCH(to_bf16_padded<S>, grid_for(rows * round_up8(c)), kThreads)(rows, c, round_up8(c),
                                                                           src, dst);
}

// The operand the GEMM reads: a bf16 tensor whose channels are a multiple of 8 in place (its
// 16-byte chunks are whole and aligned already), anything else converted into `staged`.
const bf16_bits* operand(int64_t rows, int64_t c, const bf16_bits* src, bf16_bits* staged) {
  if (c % kChunk == 0) return src;
  convert(rows, c, src, staged);
  return staged;
}
const bf16_bits* operand(int64_t rows, int64_t c, const float* src, bf16_bits* staged) {
  convert(rows, c, src, staged);
  return staged;
}

// The forward's B, w8 (taps * Cin8, Cout8): the weights' copy in place when both channel
// counts are multiples of 8 (its rows are then the GEMM's rows), anything else padded into
// `staged`.
template <class S>
const bf16_bits* forward_weights(const Conv2dShape& s, const S* w, bf16_bits* staged) {
  if constexpr (std::is_same_v<S, bf16_bits>)
    if (s.c_in % kChunk == 0 && s.c_out % kChunk == 0) return w;
  const int64_t ci8 = round_up8(s.c_in), co8 = round_up8(s.c_out);
  DDPM_LAUNCH(weights_to_bf16_padded<S>, grid_for(taps(s) * ci8 * co8), kThreads)(
      taps(s), s.c_in, ci8, s.c_out, co8, w, staged);
  return staged;
}

// Both entries, for either storage of the activations A (float, or bf16 bits). w_bf16: the
// weights' bf16 copy (engine/weight_copy.h) or null: then w is rounded here.
template <class A>
void forward(const Conv2dShape& s, const A* x, const float* w, const float* b, A* y,
             float* workspace, const float* per_sample, const A* residual,
             const bf16_bits* w_bf16) {
  CHECK(workspace != nullptr, "the bf16 convolution needs conv2d_bf16_forward_workspace floats");
  check_shape_limits(s);
  if (g_thin && conv2d_thin_applies(s))  // few output channels: the direct kernels
    return conv2d_thin_forward(s, x, w, w_bf16, b, per_sample, residual, y);
  const ForwardBuffers buf(s, workspace);
  const int64_t c8 = round_up8(s.c_in), oh_n = s.out_h(), ow_n = s.out_w();
  const bf16_bits* x8 = operand(s.n * s.h * s.w, s.c_in, x, buf.x8);
  const Gemm g = forward_gemm(s);
  const ForwardA a{s, oh_n, ow_n, g.m, static_cast<int>(c8), x8};
  const StoreWithAdds<A> epilogue{y, b, per_sample, residual, s.c_out, oh_n * ow_n,
                                  rows_pair(s.c_out, y) && rows_pair(s.c_out, residual)};
  const bf16_bits* w8 =
      w_bf16 ? forward_weights(s, w_bf16, buf.w8) : forward_weights(s, w, buf.w8);
  run_gemm(g, a, DenseRowsB{round_up8(s.c_out), w8}, epilogue, buf.planes);
}

// dx (+)= the dgrad of dy8 (N, OH, OW, Cout8) through w (taps, Cin, Cout), fp32 or the
// weights' bf16 copy. Stride 1: one GEMM over every dx pixel, reading the copy in place when
// Cout is a multiple of 8. Strided: by phase (kernels/dgrad_phases.h), the taps reordered by
// phase into the workspace, then a GEMM per phase with only its live taps, each writing its
// own pixels of dx; a phase no tap reaches is zeros when dx is written, untouched when it
// is added to.
template <class S, class A>
void dgrad(const Conv2dShape& s, const bf16_bits* dy8, const S* w, const Accumulate<A>& into_dx,
           const BackwardBuffers& buf) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), co8 = round_up8(s.c_out);
  if (s.stride == 1) {
    const bf16_bits* w8 = operand(taps(s) * s.c_in, s.c_out, w, buf.w8);
    const Gemm g = dgrad_gemm(s);
    run_gemm(g, DgradA{s, oh_n, ow_n, g.m, static_cast<int>(co8), dy8},
             DgradB{s, static_cast<int>(co8), w8}, into_dx, buf.planes);
    return;
  }
  DDPM_LAUNCH(weights_by_phase<S>, grid_for(taps(s) * s.c_in * co8), kThreads)(s, co8, w,
                                                                              buf.w8);
  for (int p = 0; p < s.stride * s.stride; ++p) {
    const DgradPhase ph = dgrad_phase(s, p);
    const Gemm g = phase_gemm(ph);
    Accumulate<A> into_phase = into_dx;
    into_phase.rows = PhaseRows::of(s, ph);
    if (g.k > 0) {
      run_gemm(g, DgradA{ph.shape, oh_n, ow_n, g.m, static_cast<int>(co8), dy8},
               DgradB{ph.shape, static_cast<int>(co8), buf.w8 + ph.first_tap * s.c_in * co8},
               into_phase, buf.planes);
    } else if (!into_dx.add && g.m > 0) {  // the sum of no planes through the epilogue: 0
      DDPM_LAUNCH(reduce_planes<Accumulate<A>>, grid_for(g.m * ColumnPair::pairs(g.n)),
                  kThreads)(g.m, g.n, 0, nullptr, into_phase);
    }
  }
}

template <class A>
void backward(const Conv2dShape& s, const A* x, const float* w, const A* dy, A* dx, float* dw,
              const BackwardBuffers& buf, const bf16_bits* w_bf16, GradWrite dx_write,
              GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(buf.placed, "the bf16 convolution needs conv2d_bf16_backward_workspace floats");
  check_shape_limits(s);
  if (g_thin && conv2d_thin_applies(s))  // few output channels: the direct kernels
    return conv2d_thin_backward(s, x, w, w_bf16, dy, dx, dw, buf.thin_planes, dx_write,
                                dw_write);
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), ci8 = round_up8(s.c_in),
                co8 = round_up8(s.c_out);
  const bf16_bits* dy8 = operand(s.n * oh_n * ow_n, s.c_out, dy, buf.dy8);
  if (dx) {
    const Accumulate<A> into_dx{dx, s.c_in, dx_write == GradWrite::Accumulate,
                                rows_pair(s.c_in, dx)};
    if (w_bf16) {
      dgrad(s, dy8, w_bf16, into_dx, buf);
    } else {
      dgrad(s, dy8, w, into_dx, buf);
    }
  }
  if (dw) {
    const bf16_bits* x8 = operand(s.n * s.h * s.w, s.c_in, x, buf.x8);
    const Gemm g = wgrad_gemm(s);
    run_gemm(g, WgradA{s, oh_n, ow_n, g.m, static_cast<int>(ci8), x8},
             DenseRowsB{co8, dy8},
             AccumulateWgrad{dw, s.c_in, ci8, s.c_out, dw_write == GradWrite::Accumulate,
                             rows_pair(s.c_out, dw)},
             buf.planes);
  }
}

}  // namespace

void set_conv2d_bf16_tiles(Bf16Tiles t) { g_tiles = t; }
Bf16Tiles conv2d_bf16_tiles() { return g_tiles; }
void set_conv2d_bf16_thin(bool on) { g_thin = on; }
bool conv2d_bf16_thin() { return g_thin; }

int conv2d_bf16_split_k(int64_t m, int64_t n, int64_t k) { return Gemm{"", m, n, k}.splits(); }

int conv2d_bf16_v5_blocks_an_sm(Bf16Tiles t) {
  CHECK(t == Bf16Tiles::Wgmma || t == Bf16Tiles::WgmmaPaired,
        "conv2d_bf16_v5_blocks_an_sm: Wgmma or WgmmaPaired (the rings of 4 and 3 stages)");
  // The three passes' kernels as bf16 activations run them; the fewest blocks of the three.
  auto fewest = [](auto ring) {
    constexpr int kRing = decltype(ring)::value;
    constexpr size_t kBytes = sm90::shared_bytes_with_barriers(1, kRing);
    constexpr int kSizedFor = sm90::blocks_an_sm(kRing);
    const char* what = "conv v5 (wgmma)";
    return std::min(
        {resident_blocks(conv_gemm_wgmma<kRing, ForwardA, DenseRowsB, StoreWithAdds<bf16_bits>>,
                         sm90::kThreads, kBytes, kSizedFor, what),
         resident_blocks(conv_gemm_wgmma<kRing, DgradA, DgradB, Accumulate<bf16_bits>>,
                         sm90::kThreads, kBytes, kSizedFor, what),
         resident_blocks(conv_gemm_wgmma<kRing, WgradA, DenseRowsB, AccumulateWgrad>,
                         sm90::kThreads, kBytes, kSizedFor, what)});
  };
  return t == Bf16Tiles::WgmmaPaired ? fewest(std::integral_constant<int, sm90::kPairedStages>{})
                                     : fewest(std::integral_constant<int, sm90::kStages>{});
}

int64_t conv2d_bf16_forward_workspace(const Conv2dShape& s) {
  return ForwardBuffers(s, nullptr).floats;
}

int64_t conv2d_bf16_backward_workspace(const Conv2dShape& s) {
  return BackwardBuffers(s, nullptr).floats;
}

void conv2d_bf16_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample,
                         const float* residual, const uint16_t* w_bf16) {
  forward(s, x, w, b, y, workspace, per_sample, residual, w_bf16);
}

void conv2d_bf16_forward(const Conv2dShape& s, const uint16_t* x, const float* w, const float* b,
                         uint16_t* y, float* workspace, const float* per_sample,
                         const uint16_t* residual, const uint16_t* w_bf16) {
  forward(s, x, w, b, y, workspace, per_sample, residual, w_bf16);
}

void conv2d_bf16_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* workspace, const uint16_t* w_bf16,
                          GradWrite dx_write, GradWrite dw_write) {
  backward(s, x, w, dy, dx, dw, BackwardBuffers(s, workspace), w_bf16, dx_write, dw_write);
}

void conv2d_bf16_backward(const Conv2dShape& s, const uint16_t* x, const float* w,
                          const uint16_t* dy, uint16_t* dx, float* dw, float* db,
                          float* workspace, const uint16_t* w_bf16, GradWrite dx_write,
                          GradWrite dw_write) {
  const BackwardBuffers buf(s, workspace);
  backward(s, x, w, dy, dx, dw, buf, w_bf16, dx_write, dw_write);
  if (db) broadcast_add_backward(bias_rows(s), dy, db, buf.bias_sums);
}

}  // namespace ddpm::cuda
