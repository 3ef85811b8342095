// Convolution v5: the three passes on Hopper's wgmma (sm_90a).
//
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
// Its schedules (Bf16Tiles): that ring of 4 stages; with B by the copy engine (TMA), and with
// the gathered A too, by the engine's im2col mode, in all three passes (WgmmaTma,
// WgmmaIm2col: one thread asks for the stage's tiles, none gathers; where it asks for both,
// a producer warpgroup of its own, conv_gemm_wgmma_ws); a ring of 3 stages, two blocks an SM
// (WgmmaPaired); 256x128 tiles (WgmmaTall). The same tiles land in shared memory whichever
// brings them, so every schedule gives v5's bits.

#include <algorithm>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_bf16_gemm.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/major.h"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/tensor_map.cuh"
#include "kernels/cuda/wgmma_tile.cuh"

namespace ddpm::cuda {
namespace conv_bf16 {
namespace {

static_assert(sm90::kTile == kPlanTile, "the split plan counts v5's tiles");

// Where the stage thread 0 requests next lies along K, for the loaders whose tiles the copy
// engine brings: k itself, and its tap and channel in the K order (KOrder), set once from
// the slice's first k and then walked a half stage (kBK) at a time, as the kernel calls
// advance. KOrder::place divides 64-bit k: a subroutine of ~80 instructions a division,
// which thread 0 would run on its warpgroup's way to the stage's products. k is right in
// any order (what a plain order of several taps needs: natural(k) = k there); the tap and
// the channel in a block order and in a plain order of one tap (its users' orders). Both
// are compiled only with the kernels that use them (DDPM_HAS_SM90A_WGMMA; elsewhere the
// kernel is empty and the loaders below have no members to walk with).
#if DDPM_HAS_SM90A_WGMMA
struct StageWalk {
  int64_t k;
  int tap, c, left;  // left: channels to the end of the block
  __device__ static StageWalk at(const KOrder& o, int64_t k0) {
    const KOrder::Place p = o.place(k0);
    return {k0, p.tap, p.c, o.block - p.c % o.block};
  }
  __device__ void advance(const KOrder& o) {
    k += kBK;
    c += kBK;
    left -= kBK;
    if (left > 0) return;
    left = o.block;  // the block's end: the next tap's start of it, or the next block
    c -= o.block;
    if (++tap == o.taps) {
      tap = 0;
      c += o.block;
    }
  }
};
#endif

// What a K-major loader whose tiles the copy engine brings (Loader: DgradTmaB, Im2colTmaA,
// each with its K order `order`) tells the kernel: no chunks of its own, thread 0's StageWalk
// from the slice's first k (thread 0's first chunk's).
template <class Loader>
struct KMajorByEngine {
#if DDPM_HAS_SM90A_WGMMA
  static constexpr bool kKMajor = true;
  static constexpr bool kByCopyEngine = true;
  using State = StageWalk;
  template <int kJ>
  __device__ State start(const int64_t (&)[kJ], int64_t k0, int64_t) const {
    return StageWalk::at(k_order(), k0);
  }
  __device__ void advance(State& st) const { st.advance(k_order()); }
  __device__ const KOrder& k_order() const { return static_cast<const Loader*>(this)->order; }
#endif
};

// The same matrix delivered by the copy engine (v5 only, Bf16Tiles::WgmmaTma): a tensor map
// of it (rows k x cols, boxes of 64 rows of k by 64 columns: an MN-major panel), and one
// thread asks for the tile's two panels a stage (request); columns past `cols` and rows
// past the matrix's k are zeros from the engine. No thread computes a chunk's address. A K
// slice ends on a stage boundary (v5's slices are whole 64-deep stages), so a box never
// holds rows of the next slice. In the forward's K order (KOrder) a stage's 64 rows are one
// tap's block of 64 channels, consecutive rows of the map: the box starts at the stage's
// first row, order.natural(k0): tap c8 + c (k in the plain order). The kernel takes it as a
// __grid_constant__ parameter: the copy reads the map where the launch put it.
struct DenseRowsTmaB {
  CUtensorMap map;
  KOrder order;  // TapRowsB's (the forward's K); DenseRowsB's default, rows in order
#if DDPM_HAS_SM90A_WGMMA  // (v5's kernel, their only user, is compiled empty elsewhere)
  static constexpr bool kKMajor = false;
  static constexpr bool kByCopyEngine = true;
  using State = StageWalk;  // thread 0's (its first row of k is the slice's first k)
  template <int kJ>
  __device__ State start(int64_t, const int64_t (&k)[kJ], int64_t) const {
    return StageWalk::at(order, k[0]);
  }
  __device__ void advance(State& st) const { st.advance(order); }
  // The 128 columns at col0 of the stage's 64 rows of k (st) into `tile` (its B tile).
  __device__ void request(ptx::SharedAddress tile, int64_t col0, const State& st,
                          ptx::SharedAddress landed) const {
    const int64_t row = order.plain() ? st.k : int64_t{st.tap} * order.c8 + st.c;
    sm90::tma_tile<Major::MN>(tile, &map, static_cast<int>(col0), static_cast<int>(row), landed);
  }
#endif
};
// Dgrad B by the copy engine (v5 only, Bf16Tiles::WgmmaTma): DgradB's w8 (taps, Cin, Cout8)
// as a rank-3 tensor map, boxes of 128 rows (ci) of 64 co of one tap: a K-major tile, k's
// (tap, co) in the dgrad's K order (KOrder, blocks of 64 channels). Needs Cout8 a multiple
// of 64, so that a 64-deep stage lies in one tap (every CIFAR-10 layer but the last, Cout =
// 3); thread 0 walks the stages' taps and first co (StageWalk). Rows past Cin are zeros from
// the engine.
struct DgradTmaB : KMajorByEngine<DgradTmaB> {
  CUtensorMap map;
  KOrder order;  // DgradB's
#if DDPM_HAS_SM90A_WGMMA  // (as DenseRowsTmaB's)
  // Rows (ci) row0..row0+127 of the stage's 64 of k (st) into `tile` (its B tile).
  __device__ void request(ptx::SharedAddress tile, int64_t row0, const State& st,
                          ptx::SharedAddress landed) const {
    ptx::tma_load_3d(tile, &map, st.c, static_cast<int>(row0), st.tap, landed);
  }
#endif
};
// A gathered A by the copy engine's im2col mode (v5 only, Bf16Tiles::WgmmaIm2col): ForwardA's
// im2col(x8) or DgradA's window of dy8, without a thread gathering it. Both gather, for row m
// = (n, gh, gw) of a grid of pixels, tap (kh, kw) of a 2-d window of an NHWC tensor `src`
// (N, SH, SW, C8), stride 1; so the tensor is an im2col tensor map (tensor_map.cuh's
// Im2colBox) whose box is the tile's 128 rows of 64 channels: row p the filter base of the
// p-th pixel of the grid from the tile's first, the base walking the map's bounding box
// along W, then H, then to the next image, as m counts pixels; the stage's tap is the
// instruction's offsets, added to the base, and its 64 channels the box's. Pixels outside
// src are zeros from the engine, as the loaders' masks make them.
//   forward  src = x8, the grid the output's (OH x OW); pixel (gh, gw) reads x at (gh -
//            pad_top + kh, gw - pad_left + kw): base (gh, gw) - pad, offsets (kh, kw).
//   dgrad    src = dy8 (OH x OW), the grid dx's (H x W, a phase's own pixels when strided:
//            DgradA); pixel (gh, gw) reads dy at (gh + pad_top - kh, gw + pad_left - kw):
//            base (gh, gw) + pad - (K - 1), offsets (KH - 1 - kh, KW - 1 - kw), the taps
//            flipped so that they count up from the base.
// Either way the base of grid pixel (0, 0) is the bounding box's lower corner, and its last
// the grid's size on from it (the upper corner: that less the tensor's size). A stage is one
// tap's block of 64 channels (KOrder with C8 a multiple of 64), so one request a stage. Rows
// past M run into the image after the last: zeros, never stored.
struct Im2colTmaA : KMajorByEngine<Im2colTmaA> {
  CUtensorMap map;
  KOrder order;  // the gathering loader's
  int kh_n, kw_n;
  bool flip;      // the dgrad's taps
  int lower;      // the bounding box's lower corner (the same along H and W)
  int64_t grid_h, grid_w;
#if DDPM_HAS_SM90A_WGMMA  // (as DenseRowsTmaB's)
  struct Base {  // the filter's base for the tile's first row, found once a block
    int w, h, n;
  };
  __device__ Base base_of(int64_t row0) const {
    const int64_t gw = row0 % grid_w, gh = row0 / grid_w % grid_h, n = row0 / (grid_w * grid_h);
    return {static_cast<int>(gw) + lower, static_cast<int>(gh) + lower, static_cast<int>(n)};
  }
  // The tile's 128 rows of the stage's 64 of k (st: one tap's 64 channels) into `tile` (the
  // stage's A).
  __device__ void request(ptx::SharedAddress tile, const Base& b, const State& st,
                          ptx::SharedAddress landed) const {
    const int kh = st.tap / kw_n, kw = st.tap - kh * kw_n;
    ptx::tma_load_im2col_4d(tile, &map, st.c, b.w, b.h, b.n,
                            static_cast<uint16_t>(flip ? kw_n - 1 - kw : kw),
                            static_cast<uint16_t>(flip ? kh_n - 1 - kh : kh), landed);
  }
#endif
};

// The wgrad's gathered A by the im2col mode (v5 only, Bf16Tiles::WgmmaIm2col): WgradA's
// x8, MN-major. A stage's 64 rows of k are 64 pixels (n, oh, ow) of the output's grid; its
// 128 columns m, two panels of 64 (TileLayout<MN>), each 64 channels of one tap (WgradA's
// column order, KOrder's blocks: (ci / 64, kh, kw, ci % 64)). A panel is then an im2col box
// of 64 pixels of 64 channels: pixel p's 128-byte row of channels is the panel's row k = p,
// the MN-major layout exactly, in the same swizzle. So the forward's window of x (base
// (oh, ow) - pad, offsets the panel's tap), two requests a stage at the same base. The
// panels' taps and channels are the block's, found once (base_of); the base walks the
// pixels a half stage at a time (PixelStep, images counted as one), thread 0's from its
// first row of k, the slice's first k. Columns past m read channels past C8: zeros from
// the engine, never stored; pixels past the last image are zeros too, as are dy's rows
// there (DenseRowsTmaB).
struct WgradIm2colA {
  CUtensorMap map;  // x8's, boxes of 64 pixels
  KOrder order;     // WgradA's (the columns')
  int kw_n;
  int lower;  // the bounding box's lower corner (the same along H and W)
  int64_t grid_h, grid_w;
  PixelStep step;  // kBK pixels on: whole images counted as one
#if DDPM_HAS_SM90A_WGMMA  // (as DenseRowsTmaB's)
  static constexpr bool kKMajor = false;
  static constexpr bool kByCopyEngine = true;
  struct State {  // the stage's first pixel
    int ow, oh;
    int64_t n;
  };
  template <int kJ>
  __device__ State start(int64_t, const int64_t (&k)[kJ], int64_t) const {
    return {static_cast<int>(k[0] % grid_w), static_cast<int>(k[0] / grid_w % grid_h),
            k[0] / (grid_w * grid_h)};
  }
  __device__ void advance(State& st) const { step.walk(st.ow, st.oh, st.n, grid_w, grid_h); }
  struct Panel {
    int c;
    uint16_t kw, kh;
  };
  struct Base {  // the tile's two panels, found once a block
    Panel panel[2];
  };
  __device__ Base base_of(int64_t col0) const {
    Base b;
    for (int p = 0; p < 2; ++p) {
      const KOrder::Place at = order.place(col0 + p * sm90::TileLayout<Major::MN>::kPanel);
      b.panel[p] = {at.c, static_cast<uint16_t>(at.tap % kw_n),
                    static_cast<uint16_t>(at.tap / kw_n)};
    }
    return b;
  }
  // The tile's two panels of the stage's 64 pixels (st) into `tile` (the stage's A).
  __device__ void request(ptx::SharedAddress tile, const Base& b, const State& st,
                          ptx::SharedAddress landed) const {
    for (int p = 0; p < 2; ++p)
      ptx::tma_load_im2col_4d(tile + p * sm90::TileLayout<Major::MN>::kPanelBytes, &map,
                              b.panel[p].c, st.ow + lower, st.oh + lower,
                              static_cast<int>(st.n), b.panel[p].kw, b.panel[p].kh, landed);
  }
#endif
};

// What the im2col loaders (Im2colTmaA, WgradIm2colA) need to know of a gathering loader, and
// whether they can stand for it: stride 1 (the traversal steps one pixel), C8 a multiple of
// 64, the same corners along H and W (tensor_map.cuh says why), within the rank-4 map's 8
// bits, and filters of at most 256 taps a side (the offsets' 8 bits).
struct Im2colGather {
  const bf16_bits* src;
  int64_t n, src_h, src_w, c8, grid_h, grid_w;
  int64_t lower_h, lower_w, upper_h, upper_w;  // upper: from the tensor's last pixel
  int kh, kw, stride;
  bool flip;
  KOrder order;
  bool applies() const {
    const bool in_range = lower_h >= -128 && upper_h >= -128 && upper_h <= 127;
    return stride == 1 && c8 % KOrder::kBlock == 0 && lower_h == lower_w && upper_h == upper_w &&
           in_range && kh <= 256 && kw <= 256;
  }
  CUtensorMap map(int pixels) const {  // boxes of `pixels` pixels
    const Im2colBox box{n, src_h, src_w, c8, static_cast<int>(lower_h),
                        static_cast<int>(upper_h), pixels};
    return bf16_im2col_tensor_map_sw128(src, box, "conv v5 (wgmma, im2col A)");
  }
  // The forward's and the dgrad's: K-major, the box the 128-row tile's pixels.
  Im2colTmaA rows_loader() const {
    return {{}, map(sm90::kTile), order, kh, kw, flip, static_cast<int>(lower_h), grid_h,
            grid_w};
  }
  // The wgrad's: MN-major, the box a panel's 64 pixels of k.
  WgradIm2colA panels_loader() const {
    return {map(sm90::TileLayout<Major::MN>::kPanel), order, kw, static_cast<int>(lower_h),
            grid_h, grid_w, PixelStep::of(grid_h, grid_w, 1)};
  }
};
// x's window at the output's pixels: the forward's gather, and the wgrad's (ForwardA,
// WgradA: the same x8, shape and grid).
template <class L>
Im2colGather window_of_x(const L& a) {
  const Conv2dShape& s = a.s;
  return {a.x8, s.n, s.h, s.w, a.c8, a.oh_n, a.ow_n,
          -s.pad_top, -s.pad_left, a.oh_n - s.h - s.pad_top, a.ow_n - s.w - s.pad_left,
          s.kh, s.kw, s.stride, false, a.order};
}
template <ptx::CacheAt kCache>
Im2colGather gather_of(const ForwardA<kCache>& a) {
  return window_of_x(a);
}
template <ptx::CacheAt kCache>
Im2colGather gather_of(const WgradA<kCache>& a) {
  return window_of_x(a);
}
// The dgrad's (DgradA's is stride 1: a strided dgrad runs by phase, each phase a stride-1
// gather of its own pixels).
template <ptx::CacheAt kCache>
Im2colGather gather_of(const DgradA<kCache>& a) {
  const Conv2dShape& s = a.s;
  const int64_t lower_h = s.pad_top - (s.kh - 1), lower_w = s.pad_left - (s.kw - 1);
  return {a.dy8, s.n, a.oh_n, a.ow_n, a.c8, s.h, s.w,
          lower_h, lower_w, lower_h + s.h - a.oh_n, lower_w + s.w - a.ow_n,
          s.kh, s.kw, 1, true, a.order};
}
template <class L>
struct Gathers : std::false_type {};
template <ptx::CacheAt kCache>
struct Gathers<ForwardA<kCache>> : std::true_type {};
template <ptx::CacheAt kCache>
struct Gathers<DgradA<kCache>> : std::true_type {};
template <ptx::CacheAt kCache>
struct Gathers<WgradA<kCache>> : std::true_type {};

// True for a loader whose tiles the copy engine brings (kByCopyEngine), false for the
// cp.async ones (which do not say).
template <class L, class = void>
struct ByCopyEngine : std::false_type {};
template <class L>
struct ByCopyEngine<L, std::void_t<decltype(L::kByCopyEngine)>>
    : std::bool_constant<L::kByCopyEngine> {};

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
// kRows: the tile's rows (m or n), 128, or 256 for the tall tile's A (Bf16Tiles::WgmmaTall:
// four chunks a thread and half stage where the 128-wide tiles have two; v4's 256x128 tile
// maps them the same way, and the permutation below holds for either).
template <bool kKMajor, int kRows = sm90::kTile>
struct WgmmaHalf : Tile<kKMajor, kRows, sm90::kThreads> {
  using V4 = Tile<kKMajor, kRows, sm90::kThreads>;
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
template <class L, int kRows = sm90::kTile>
__device__ int wgmma_chunk_bytes(int tid, int j, int h) {
  using T = WgmmaHalf<L::kKMajor, kRows>;
  const int mn = L::kKMajor ? T::row_of(tid, j) : kChunk * T::chunk_of(tid, j);
  const int k = L::kKMajor ? kChunk * T::chunk_of(tid, j) : T::row_of(tid, j);
  return sm90::TileLayout<kMajorOf<L>>::offset(mn, kBK * h + k);
}

// A block's K slice: blockIdx.z's k_slice of k, in `tiles` stages (0 past k).
struct Slice {
  int64_t begin, end;
  int tiles;
  __device__ Slice(int64_t k, int64_t k_slice)
      : begin(blockIdx.z * k_slice), end(begin + k_slice < k ? begin + k_slice : k),
        tiles(end > begin ? static_cast<int>((end - begin + sm90::kTileK - 1) / sm90::kTileK)
                          : 0) {}
};

#if DDPM_HAS_SM90A_WGMMA  // (the kernels' own pieces: compiled empty elsewhere)
// By the thread that asks: the stage's tiles that the copy engine brings (A's, B's or both),
// onto the stage's barrier `bar`, which then expects their bytes.
template <int kSub, class LoadA, class LoadB, class BaseA, class StateA, class StateB>
__device__ __forceinline__ void request_by_engine(const LoadA& a, const BaseA& a_base,
                                                  const StateA& a_state, const LoadB& b,
                                                  const StateB& b_state, int64_t col0,
                                                  ptx::SharedAddress stage,
                                                  ptx::SharedAddress bar) {
  constexpr bool kEngineA = ByCopyEngine<LoadA>::value, kEngineB = ByCopyEngine<LoadB>::value;
  constexpr uint32_t kEngineBytes =
      (kEngineA ? sm90::a_tile_bytes(kSub) : 0) + (kEngineB ? sm90::kTileBytes : 0);
  ptx::mbarrier_arrive_expect_tx(bar, kEngineBytes);
  if constexpr (kEngineA) a.request(stage, a_base, a_state, bar);
  if constexpr (kEngineB) b.request(stage + sm90::a_tile_bytes(kSub), col0, b_state, bar);
}

// The block's products (kSub sub-tiles of 64 rows a warpgroup; tid 0..255, the threads of
// the two warpgroups that multiply) to the epilogue, or to the block's split-K plane.
template <int kSub, class Epilogue>
__device__ __forceinline__ void hand_over_tile(const float (&d)[kSub][64], int tid,
                                               int64_t row0, int64_t col0, int64_t m,
                                               int64_t n, const Epilogue& epilogue,
                                               float* planes) {
  const sm90::Fragment f(tid, kSub);
  float* const plane = gridDim.z > 1 ? planes + blockIdx.z * m * n : nullptr;
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // unrolled: d's indices must be constants, or d is in memory
      const int64_t row = row0 + f.row(h, i);
      if (row >= m) continue;
      const auto out_row = plane ? typename Epilogue::Row{} : epilogue.row(row);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float v[2] = {d[i][4 * j + 2 * h], d[i][4 * j + 2 * h + 1]};
        hand_over(epilogue, out_row, plane, row, col0 + f.col(j), n, v);
      }
    }
  }
}
#endif

// A ring of kRing stages: sm90::kStages, or sm90::kPairedStages (two blocks an SM), or
// kTallStages for the tall tile; kSub sub-tiles of 64 rows a warpgroup (wgmma_tile.cuh): 1,
// a 128 x 128 tile, or 2, the tall 256 x 128 one.
template <int kRing, int kSub, class LoadA, class LoadB, class Epilogue>
__global__ void __launch_bounds__(sm90::kThreads, sm90::blocks_an_sm(kRing, kSub))
conv_gemm_wgmma(int64_t m, int64_t n, int64_t k, int64_t k_slice, const __grid_constant__ LoadA a,
                const __grid_constant__ LoadB b, Epilogue epilogue, float* planes) {
#if DDPM_HAS_SM90A_WGMMA
  constexpr bool kEngineA = ByCopyEngine<LoadA>::value, kEngineB = ByCopyEngine<LoadB>::value;
  constexpr bool kEngine = kEngineA || kEngineB;
  constexpr int kRowsA = sm90::tile_rows(kSub), kStageBytes = sm90::stage_bytes(kSub),
                kBTile = sm90::a_tile_bytes(kSub);  // B's tile in a stage, after A's
  using HalfA = WgmmaHalf<LoadA::kKMajor, kRowsA>;
  using HalfB = WgmmaHalf<LoadB::kKMajor>;
  constexpr int kJA = HalfA::kChunksPerThread, kJB = HalfB::kChunksPerThread;
  DDPM_DYNAMIC_SHARED(bf16_bits, smem);
  const ptx::SharedAddress tiles = ptx::computed_once(sm90::first_stage(smem));
  const sm90::StageBarriers<kRing, kSub> landed(tiles);  // used when the engine loads
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsA;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * sm90::kTile;
  const Slice slice(k, k_slice);

  // the thread's chunk j of half h of a stage, in bytes from its A and its B tile
  int a_off[2][kJA], b_off[2][kJB];
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < kJA; ++j) a_off[h][j] = wgmma_chunk_bytes<LoadA, kRowsA>(tid, j, h);
    for (int j = 0; j < kJB; ++j) b_off[h][j] = wgmma_chunk_bytes<LoadB>(tid, j, h);
  }
  auto a_state = start_chunks<HalfA>(a, tid, row0, slice.begin, slice.end);
  auto b_state = start_chunks<HalfB>(b, tid, col0, slice.begin, slice.end);
  if constexpr (kEngine) {
    if (tid == 0) landed.init();
    __syncthreads();
  }
  // the engine's A: the tile's first row, once, by the one thread that requests
  [[maybe_unused]] const auto a_base = [&] {
    if constexpr (kEngineA)
      return tid == 0 ? a.base_of(row0) : typename LoadA::Base{};
    else
      return 0;
  }();
  // the loaders only move forward: tiles are requested in order, each once
  auto request = [&](int tile) {
    if (tile < slice.tiles) {
      const ptx::SharedAddress stage = tiles + (tile % kRing) * kStageBytes;
      if constexpr (kEngine) {
        if (tid == 0)
          request_by_engine<kSub>(a, a_base, a_state, b, b_state, col0, stage, landed.of(tile));
      }
      for (int h = 0; h < 2; ++h) {
        if constexpr (!kEngineA) {
          for (int j = 0; j < kJA; ++j) {
            const Chunk ca = a.chunk(a_state, j);
            ptx::cp_async_16(stage + a_off[h][j], ca.src, ca.valid, ca.cache);
          }
        }
        if constexpr (!kEngineB) {
          for (int j = 0; j < kJB; ++j) {
            const Chunk cb = b.chunk(b_state, j);
            ptx::cp_async_16(stage + kBTile + b_off[h][j], cb.src, cb.valid, cb.cache);
          }
        }
        a.advance(a_state);
        b.advance(b_state);
      }
    }
    ptx::cp_async_commit();  // possibly empty: the group count stays uniform
  };
  for (int t = 0; t < kRing - 2; ++t) request(t);

  float d[kSub][64];
  for (auto& sub : d)
    for (float& v : sub) v = 0.0f;
  const int warpgroup = sm90::uniform_warpgroup(tid);
  for (int t = 0; t < slice.tiles; ++t) {
    ptx::cp_async_wait<kRing - 3>();  // tile t has landed (this thread's chunks)
    ptx::fence_proxy_async_shared();  // ... where the tensor cores read
    if constexpr (kEngine)            // ... and the engine's operands
      landed.wait(t);
    __syncthreads();                  // ... everyone's; tile t-2's products are done
    request(t + kRing - 2);           // into tile t-2's stage
    sm90::multiply_stage<kMajorOf<LoadA>, kMajorOf<LoadB>, kSub>(
        d, tiles + (t % kRing) * kStageBytes, warpgroup, t > 0);
  }
  sm90::finish(d);
  ptx::cp_async_wait<0>();  // (only empty groups are left)
  hand_over_tile(d, tid, row0, col0, m, n, epilogue, planes);
#endif
}

// The warp-specialised schedule, where the copy engine brings both operands (WgmmaIm2col on
// a pass it takes whole; set_conv2d_bf16_v5_warp_specialised): gemm_sm90.cu's
// TmaWarpSpecialized on the convolution's loaders, the 128 x 128 tile in a ring of 4. A
// third warpgroup, the producer, comes first: its thread 0 walks the slice's stages and
// requests each into its stage once the consumers have released the tile before it there
// (the stage's second barrier, one arrival per consumer thread). The two consumer
// warpgroups (the plain kernel's 256 threads, tid 0..255) wait for a tile's bytes,
// multiply, and release the tile before it once multiply_stage has seen its products done.
// No block barrier in the loop: up to 3 tiles of loads in flight where the plain loop keeps
// 2, and a warpgroup ahead of the other is not held back every stage. The same tiles in the
// same stages, the same products: the same bits. grid as launch_split's, kWsThreads threads,
// shared_bytes_with_barriers(2): the landed and the released barriers.
constexpr int kWsThreads = sm90::kThreads + 128;  // the producer warpgroup first

template <class LoadA, class LoadB, class Epilogue>
__global__ void __launch_bounds__(kWsThreads, 1)
conv_gemm_wgmma_ws(int64_t m, int64_t n, int64_t k, int64_t k_slice,
                   const __grid_constant__ LoadA a, const __grid_constant__ LoadB b,
                   Epilogue epilogue, float* planes) {
#if DDPM_HAS_SM90A_WGMMA
  static_assert(ByCopyEngine<LoadA>::value && ByCopyEngine<LoadB>::value,
                "the producer requests both operands: no consumer copies one");
  constexpr int kRing = sm90::kStages;
  DDPM_DYNAMIC_SHARED(bf16_bits, smem);
  const ptx::SharedAddress tiles = ptx::computed_once(sm90::first_stage(smem));
  const sm90::StageBarriers<kRing> landed(tiles, 0), released(tiles, 1);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * sm90::kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * sm90::kTile;
  const Slice slice(k, k_slice);

  if (threadIdx.x == 0) {
    landed.init(1);                 // the producer's arrive.expect_tx, then the bytes
    released.init(sm90::kThreads);  // every consumer thread
  }
  __syncthreads();  // the only block barrier: the barriers are initialised
  if (threadIdx.x < 128) {  // the producer warpgroup: thread 0 requests, the rest are idle
    if (threadIdx.x != 0) return;
    auto a_state = start_chunks<WgmmaHalf<LoadA::kKMajor>>(a, 0, row0, slice.begin, slice.end);
    auto b_state = start_chunks<WgmmaHalf<LoadB::kKMajor>>(b, 0, col0, slice.begin, slice.end);
    const auto a_base = a.base_of(row0);
    for (int t = 0; t < slice.tiles; ++t) {
      released.wait_released(t);  // tile t - kRing's products are done (t < kRing: none)
      request_by_engine<1>(a, a_base, a_state, b, b_state, col0,
                           tiles + (t % kRing) * sm90::kStageBytes, landed.of(t));
      for (int h = 0; h < 2; ++h) {  // the loaders walk K a half stage at a time
        a.advance(a_state);
        b.advance(b_state);
      }
    }
    return;
  }
  const int tid = static_cast<int>(threadIdx.x) - 128;  // 0..255, as in the plain kernel
  const int warpgroup = sm90::uniform_warpgroup(tid);
  // d is zeroed only where no product runs (an empty slice): the first stage's products
  // start from zero themselves (accumulate false). Zeroed ahead of the loop, as in the GEMM,
  // ptxas serialized every wgmma of the loop here (its C7515 note: "non wgmma instructions
  // defining accumulator registers ... between start and end of the pipeline stage"), a
  // wait after each of them, where the GEMM's loop keeps a stage in flight.
  // Build.TunedKernelsSpillNothingOnSm90 fails on that note now.
  float d[1][64];
  if (slice.tiles == 0) {
    for (float& v : d[0]) v = 0.0f;
  } else {
    for (int t = 0; t < slice.tiles; ++t) {
      landed.wait(t);
      sm90::multiply_stage<kMajorOf<LoadA>, kMajorOf<LoadB>, 1>(
          d, tiles + (t % kRing) * sm90::kStageBytes, warpgroup, t > 0);
      if (t > 0) ptx::mbarrier_arrive(released.of(t - 1));  // tile t-1's products are done
    }
    sm90::finish(d);
  }
  hand_over_tile(d, tid, row0, col0, m, n, epilogue, planes);
#endif
}

// v5: v4's split plan, its slices whole 64-deep stages; a ring of kRing stages, kSub
// sub-tiles of 64 rows a warpgroup (the split counts 128 x 128 tiles whatever the block's,
// so every schedule sums the same slices: the same bits).
template <int kRing = sm90::kStages, int kSub = 1, class LoadA, class LoadB, class Epilogue>
void launch_wgmma(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  if (g.m == 0 || g.n == 0) return;
  CHECK(gemm_sm90_available(), "conv v5 (wgmma) " << sm90a_missing());
  constexpr size_t kBytes = sm90::shared_bytes_with_barriers(1, kRing, kSub);  // TMA B's
  constexpr int kBlocks = sm90::blocks_an_sm(kRing, kSub);
  const auto kernel = conv_gemm_wgmma<kRing, kSub, LoadA, LoadB, Epilogue>;
  auto launch = [&](dim3 grid, int64_t k_slice) {
    reserve_shared_memory(kernel, kBytes, "conv v5 (wgmma)", "no Hopper GPU has less", kBlocks);
    // reserve_shared_memory sets the paired ring's carveout; the 4-stage ring's and the tall
    // tile's one block an SM states its own as v4's kernels do: its 130 (146) KB of shared
    // memory, the rest, 124 (92) KB, L1 for the gathers (device_info.cuh).
    if constexpr (kBlocks == 1) {
      static const bool carved =
          (leave_rest_to_l1_of_resident(kernel, sm90::kThreads, kBytes, 1), true);
      (void)carved;
    }
    DDPM_LAUNCH((conv_gemm_wgmma<kRing, kSub, LoadA, LoadB, Epilogue>), grid, sm90::kThreads,
                kBytes)(g.m, g.n, g.k, k_slice, a, b, epilogue, planes);
  };
  launch_split(g, sm90::tile_rows(kSub), sm90::kTile, sm90::kTileK, planes, epilogue, launch);
}

// The warp-specialised kernel on v5's split plan (the copy engine brings both operands).
template <class LoadA, class LoadB, class Epilogue>
void launch_wgmma_ws(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  if (g.m == 0 || g.n == 0) return;
  CHECK(gemm_sm90_available(), "conv v5 (wgmma, warp-specialised) " << sm90a_missing());
  constexpr size_t kBytes = sm90::shared_bytes_with_barriers(2);  // landed and released
  const auto kernel = conv_gemm_wgmma_ws<LoadA, LoadB, Epilogue>;
  auto launch = [&](dim3 grid, int64_t k_slice) {
    reserve_shared_memory(kernel, kBytes, "conv v5 (wgmma, warp-specialised)",
                          "no Hopper GPU has less");
    DDPM_LAUNCH((conv_gemm_wgmma_ws<LoadA, LoadB, Epilogue>), grid, kWsThreads, kBytes)(
        g.m, g.n, g.k, k_slice, a, b, epilogue, planes);
  };
  launch_split(g, sm90::kTile, sm90::kTile, sm90::kTileK, planes, epilogue, launch);
}

// Both operands by the copy engine: warp-specialised, or the plain loop
// (set_conv2d_bf16_v5_warp_specialised).
template <class LoadA, class LoadB, class Epilogue>
void launch_all_by_engine(const Gemm& g, const LoadA& a, const LoadB& b,
                          const Epilogue& epilogue, float* planes) {
  if (conv2d_bf16_v5_warp_specialised())
    launch_wgmma_ws(g, a, b, epilogue, planes);
  else
    launch_wgmma(g, a, b, epilogue, planes);
}

// With B by the copy engine: A too where t is WgmmaIm2col and a's gather allows it (the
// forward's and the dgrad's K-major A as rows of pixels, the wgrad's MN-major one as panels).
template <class LoadA, class LoadB, class Epilogue>
void launch_engine_a(Bf16Tiles t, const Gemm& g, const LoadA& a, const LoadB& engine_b,
                     const Epilogue& epilogue, float* planes) {
  if constexpr (Gathers<LoadA>::value) {
    const Im2colGather gather = gather_of(a);
    if (t == Bf16Tiles::WgmmaIm2col && gather.applies()) {
      if constexpr (LoadA::kKMajor)
        launch_all_by_engine(g, gather.rows_loader(), engine_b, epilogue, planes);
      else
        launch_all_by_engine(g, gather.panels_loader(), engine_b, epilogue, planes);
      return;
    }
  }
  launch_wgmma(g, a, engine_b, epilogue, planes);
}

// v5 in schedule t: B by the copy engine where t asks for it and B allows it (WgmmaTma,
// WgmmaIm2col), the forward's or the dgrad's A too where WgmmaIm2col asks for it and the
// shape allows it (Im2colGather::applies), else a ring of 4 stages (3 for WgmmaPaired; 3 of
// the tall tile for WgmmaTall) fed by v4's loaders.
template <class LoadA, class LoadB, class Epilogue>
void launch_v5(Bf16Tiles t, const Gemm& g, const LoadA& a, const LoadB& b,
               const Epilogue& epilogue, float* planes) {
  const bool by_engine = t == Bf16Tiles::WgmmaTma || t == Bf16Tiles::WgmmaIm2col;
  if (by_engine && g.k > 0) {  // B by the copy engine, where it can (and A, WgmmaIm2col's)
    if constexpr (std::is_same_v<LoadB, DenseRowsB> || std::is_same_v<LoadB, TapRowsB>) {
      const DenseRowsTmaB engine_b{bf16_tensor_map_sw128(b.matrix, g.k, b.cols, sm90::kTileK,
                                                         "conv v5 (wgmma, TMA B)"),
                                   b.order};
      launch_engine_a(t, g, a, engine_b, epilogue, planes);
      return;
    }
    if constexpr (std::is_same_v<LoadB, DgradB>) {
      if (b.c8 % sm90::kTileK == 0) {
        const int64_t taps = int64_t{b.s.kh} * b.s.kw;
        const DgradTmaB engine_b{
            {},
            bf16_planes_tensor_map_sw128(b.w8, taps, b.s.c_in, b.c8, sm90::kTile,
                                         "conv v5 (wgmma, TMA B) dgrad"),
            b.order};
        launch_engine_a(t, g, a, engine_b, epilogue, planes);
        return;
      }
    }
  }
  if (t == Bf16Tiles::WgmmaPaired) {
    launch_wgmma<sm90::kPairedStages>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::WgmmaTall) {
    launch_wgmma<sm90::kTallStages, 2>(g, a, b, epilogue, planes);
  } else {
    launch_wgmma(g, a, b, epilogue, planes);
  }
}

}  // namespace

template <class LoadA, class LoadB, class Epilogue>
void run_v5(Bf16Tiles t, const Gemm& g, const LoadA& a, const LoadB& b,
            const Epilogue& epilogue, float* planes) {
  launch_v5(t, g, a, b, epilogue, planes);
}
// What conv2d_bf16.cu runs (conv2d_bf16_gemm.cuh): each pass, each storage of the
// activations, the gathers through L1 (ForwardA<>, DgradA<>, WgradA<>) or in L2 only.
#define DDPM_RUN_V5(A, B, E)                                                                \
  template void run_v5(Bf16Tiles, const Gemm&, const A&, const B&, const E&, float*);
#define DDPM_RUN_V5_GATHERS(cache)                                                          \
  DDPM_RUN_V5(ForwardA<cache>, TapRowsB, StoreWithAdds<float>)                              \
  DDPM_RUN_V5(ForwardA<cache>, TapRowsB, StoreWithAdds<bf16_bits>)                          \
  DDPM_RUN_V5(DgradA<cache>, DgradB, Accumulate<float>)                                     \
  DDPM_RUN_V5(DgradA<cache>, DgradB, Accumulate<bf16_bits>)                                 \
  DDPM_RUN_V5(WgradA<cache>, DenseRowsB, AccumulateWgrad)
DDPM_RUN_V5_GATHERS(ptx::CacheAt::L1)
DDPM_RUN_V5_GATHERS(ptx::CacheAt::L2)
#undef DDPM_RUN_V5_GATHERS
#undef DDPM_RUN_V5

}  // namespace conv_bf16

using namespace conv_bf16;  // (this file's own pieces)

int conv2d_bf16_v5_blocks_an_sm(Bf16Tiles t) {
  CHECK(t == Bf16Tiles::Wgmma || t == Bf16Tiles::WgmmaPaired || t == Bf16Tiles::WgmmaTall,
        "conv2d_bf16_v5_blocks_an_sm: Wgmma, WgmmaPaired or WgmmaTall (the rings of 4 and 3 "
        "stages, and the tall tile's)");
  // The three passes' kernels as bf16 activations run them; the fewest blocks of the three.
  auto fewest = [](auto ring, auto sub) {
    constexpr int kRing = decltype(ring)::value, kSub = decltype(sub)::value;
    constexpr size_t kBytes = sm90::shared_bytes_with_barriers(1, kRing, kSub);
    constexpr int kSizedFor = sm90::blocks_an_sm(kRing, kSub);
    const char* what = "conv v5 (wgmma)";
    return std::min({resident_blocks(conv_gemm_wgmma<kRing, kSub, ForwardA<>, TapRowsB,
                                                     StoreWithAdds<bf16_bits>>,
                                     sm90::kThreads, kBytes, kSizedFor, what),
                     resident_blocks(conv_gemm_wgmma<kRing, kSub, DgradA<>, DgradB,
                                                     Accumulate<bf16_bits>>,
                                     sm90::kThreads, kBytes, kSizedFor, what),
                     resident_blocks(conv_gemm_wgmma<kRing, kSub, WgradA<>, DenseRowsB,
                                                     AccumulateWgrad>,
                                     sm90::kThreads, kBytes, kSizedFor, what)});
  };
  using One = std::integral_constant<int, 1>;
  if (t == Bf16Tiles::WgmmaTall)
    return fewest(std::integral_constant<int, sm90::kTallStages>{},
                  std::integral_constant<int, 2>{});
  return t == Bf16Tiles::WgmmaPaired
             ? fewest(std::integral_constant<int, sm90::kPairedStages>{}, One{})
             : fewest(std::integral_constant<int, sm90::kStages>{}, One{});
}

}  // namespace ddpm::cuda
