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
// The forward's and the dgrad's K, and the wgrad's rows of dw, run in blocks of 64 channels
// where the channels allow (KOrder, conv2d_bf16_gemm.cuh: 64 channels through every tap,
// then the next 64), so that a tap's reread of its neighbour's pixels is a stage or two
// back (the wgrad's: in the same stage, another tap of the block), in L1.
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
// warps (32x32 each) serves small outputs; 128x128 and 256x128 blocks of 64x64 warps read
// less shared memory per mma, the 256-row one also half the weights from L2 per FLOP (one
// block an SM); a heuristic or a start-up autotuner picks per pass and size (BlockShape
// below).
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
// the masks and the rest of docs/kernels.md's step 5, 155 / 179 / 207 now (32 of each are
// the mma; static counts, not timings). The same step also keeps shared memory as 32-bit
// window addresses (ptx::shared_address) with per-lane ldmatrix offsets computed before
// the loop, and the pipeline's stages as wrapping counters. The forward's and the dgrad's
// gathers reread each pixel up to KH x KW times a K loop, a few stages apart, so they are
// copied through L1 (cp.async.ca), the other operands in L2 only (.cg): docs/kernels.md,
// step 12, and the emulator's count of the sectors each way (CopyReads).
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
//
// Files: this one holds v4's kernel, its block shapes and the host side (the conversions,
// the choice of kernel, the autotuner); conv2d_bf16_gemm.cuh the loaders, the epilogues and
// the split plan, which v4 and v5 share; conv2d_bf16_v5.cu v5's kernel (sm_90a).
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/bf16.h"
#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_bf16_gemm.cuh"
#include "kernels/cuda/conv2d_thin.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/cuda/workspace_carve.h"
#include "kernels/dgrad_phases.h"

namespace ddpm::cuda {
namespace conv_bf16 {
namespace {

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
// latency with fewer warps beside it; the 4th stage is there for that. Tall: 256x128, 8
// warps (4 x 2) of 64x64, 3 stages (72 KB), one block an SM: the wide warps' reads per mma
// and, per FLOP, half the L2 traffic of the 128-row tiles' B (every block of a forward or a
// dgrad reads all of the weights: the same 295 KB for each 128 rows of the 32x32 layer's
// forward); CUTLASS's default Ampere GEMM tile (docs/kernels.md, v4 step 13). Each thread
// copies two 16-byte chunks of each operand per stage (four in the wide-warp tile and in the
// tall tile's A), and no shape changes any output's summation order: each accumulator adds
// its k in order.
// kOccupancy: the blocks an SM must hold at once (the kernel's launch bounds, which cap the
// registers a thread at 64K / (threads x blocks)): 2 for every shape but the tall one, whose
// 128 accumulators a thread at 256 threads leave room for one.
template <int kM, int kN, int kWarpsM, int kWarpsN, int kPipelineStages,
          int kBlocksAnSm = kBlocksPerSm>
struct BlockShape {
  static constexpr int kBM = kM, kBN = kN, kStages = kPipelineStages;
  static constexpr int kOccupancy = kBlocksAnSm;
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
using TallTiles = BlockShape<256, 128, 4, 2, 3, 1>;

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

// What the tensor cores multiply, the kernel's last template parameter. Bf16Products: v4,
// two bf16 values a fragment register, mma.m16n8k16. Tf32Products: the TF32 convolution's
// forward and stride-1 dgrad (conv2d_tf32.cu), fp32 operands read in place as pairs of
// 16-bit halves (x with C channels is x8 with 2C), one value a register, multiplied by
// mma.m16n8k8: a stage's 32 halves are 16 TF32 values, its two k-steps of 16 halves two
// m16n8k8 steps, and ldmatrix of a K-major tile gives the TF32 fragments from the same
// addresses (ptx.cuh). Only K-major tiles: .trans moves 16-bit elements, and would split a
// TF32 value across two registers. Rounding: the tensor cores truncate each register to
// TF32 (its low 13 bits ignored), so adding half of TF32's last place to the bits first,
// 0x1000 (an integer add on the magnitude: a carry rounds up), makes their truncation a
// rounding to nearest, ties away from zero: cvt.rna's result (kernels/tf32.h, which does
// the same add and masks), with infinity kept (0x7f801000 truncates to 0x7f800000) and
// NaN kept. One IADD a register, where cvt.rna.tf32.f32 compiled to several instructions a
// value (FSETP and IMAD among them); CUTLASS's round_half_ulp_truncate is the same trick.
// A's registers only: B is the weights, rounded once in the caller's copy of them (the
// forward's transposed weights, the dgrad's; conv2d_tf32.cu), 16 adds a stage fewer. sm_90
// SASS, a stage of the 128x128 forward: 338 instructions with cvt.rna on A and B, 261 with
// the adds on A (no spills; the bf16 forward's: 199).
struct Bf16Products {
  __device__ static void round(uint32_t&) {}
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_bf16_16816(d, a, b);
  }
};
struct Tf32Products {
  __device__ static void round(uint32_t& r) { r += 0x1000u; }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_tf32_1688(d, a, b);
  }
};

// ---- the kernel ----------------------------------------------------------------------------

// grid (M tiles, N tiles, splits). Block z multiplies k in [z * k_slice, (z+1) * k_slice)
// and, when splitting, writes its partial tile to planes + z * m * n.
// Launch bounds: the block shape's occupancy, two blocks an SM for the 128x128 tiles. At 256
// threads that caps a thread at 128 registers, so a change that needs more spills (which
// -Xptxas -v shows) instead of silently halving the occupancy: a draft of the masked
// loaders took the dgrad to 156 registers, and nothing else would have said so. (At the
// wide-warp tile's 128 threads, and the tall tile's 256 at one block an SM, the cap is 255.)
template <class Block, class LoadA, class LoadB, class Epilogue, class Products = Bf16Products>
__global__ void __launch_bounds__(Block::kThreads, Block::kOccupancy)
conv_gemm_bf16(int64_t m, int64_t n, int64_t k, int64_t k_slice, LoadA a, LoadB b,
               Epilogue epilogue, float* planes) {
  static_assert(std::is_same_v<Products, Bf16Products> || (LoadA::kKMajor && LoadB::kKMajor),
                "TF32 fragments from K-major tiles only");
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
      ptx::cp_async_16(a_tiles + stage * kABytes + a_off[j], ca.src, ca.valid, ca.cache);
    }
#pragma unroll
    for (int j = 0; j < kJB; ++j) {
      const Chunk cb = b.chunk(b_state, j);
      ptx::cp_async_16(b_tiles + stage * kBBytes + b_off[j], cb.src, cb.valid, cb.cache);
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
        for (int e = 0; e < 4; ++e) Products::round(af[i][e]);
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNT; ++j) Products::mma(acc[i][j], af[i], bf[j]);
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
static_assert(DeepTiles::kSmemBytes <= 99 * 1024 && WideWarpTiles::kSmemBytes <= 99 * 1024 &&
                  TallTiles::kSmemBytes <= 99 * 1024,
              "more than every sm_80+ GPU allows a block");
static_assert(LargeTiles::kBM == kPlanTile && LargeTiles::kBN == kPlanTile,
              "the split plan counts the large tiles");

template <class Block>
int64_t tiles_of(int64_t m, int64_t n) {
  return ((m + Block::kBM - 1) / Block::kBM) * ((n + Block::kBN - 1) / Block::kBN);
}


// Each kernel's carveout once (device_info.cuh, leave_rest_to_l1_of_resident): the shared
// memory of the blocks an SM holds, the rest L1, where the forward's and the dgrad's
// gathers find what their taps reread (the tall tile's 256-channel layers keep their hits
// only with ~136 KB of it: docs/kernels.md, v4 step 13).
template <class Block, class LoadA, class LoadB, class Epilogue, class Products = Bf16Products>
void launch_gemm(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  constexpr auto kernel = conv_gemm_bf16<Block, LoadA, LoadB, Epilogue, Products>;
  auto launch = [&](dim3 grid, int64_t k_slice) {
    opt_in_shared_memory(kernel, Block::kSmemBytes);
    static const bool carved = (leave_rest_to_l1_of_resident(kernel, Block::kThreads,
                                                             Block::kSmemBytes,
                                                             Block::kOccupancy),
                                true);
    (void)carved;
    // (the name as written: the emulator's reports and tests match it)
    DDPM_LAUNCH((conv_gemm_bf16<Block, LoadA, LoadB, Epilogue, Products>), grid,
                Block::kThreads, Block::kSmemBytes)(g.m, g.n, g.k, k_slice, a, b, epilogue,
                                                    planes);
  };
  launch_split(g, Block::kBM, Block::kBN, kBK, planes, epilogue, launch);
}

Bf16Tiles g_tiles = Bf16Tiles::Heuristic;
// Shapes of at most 8 output channels to the direct kernels (conv2d_thin.cu), not the GEMM.
bool g_thin = true;
// The three passes' gathers through L1 (ForwardA, DgradA, WgradA: ptx::CacheAt).
bool g_gathers_through_l1 = true;
// v5's WgmmaIm2col warp-specialised where the copy engine brings both operands.
bool g_v5_warp_specialised = true;
// run(cache) with cache a std::integral_constant of the CacheAt that setting asks for: the
// loaders take it as a template argument (conv2d_bf16_gemm.cuh says why).
template <class Run>
void with_gather_cache(Run run) {
  if (g_gathers_through_l1)
    run(std::integral_constant<ptx::CacheAt, ptx::CacheAt::L1>{});
  else
    run(std::integral_constant<ptx::CacheAt, ptx::CacheAt::L2>{});
}

// The autotuners' choices, per version (v4 or v5), pass and GEMM size.
using TunedKey = std::tuple<int, std::string, int64_t, int64_t, int64_t>;
std::map<TunedKey, Bf16Tiles>& tuned() {
  static std::map<TunedKey, Bf16Tiles> choices;
  return choices;
}

// What each autotuner times, in its order: v4's block shapes (each a BlockShape above), and
// v5's four schedules (Bf16Tiles::WgmmaAutotune). Within each list every choice gives the
// same bits, so a tuned run is as reproducible as an untuned one.
constexpr Bf16Tiles kTunable[] = {Bf16Tiles::Large, Bf16Tiles::Deep, Bf16Tiles::Small,
                                  Bf16Tiles::WideWarps, Bf16Tiles::Tall};
constexpr Bf16Tiles kTunableV5[] = {Bf16Tiles::Wgmma, Bf16Tiles::WgmmaTma,
                                    Bf16Tiles::WgmmaPaired, Bf16Tiles::WgmmaTall};

const char* tiles_name(Bf16Tiles t) {
  return t == Bf16Tiles::Small         ? "64x64"
         : t == Bf16Tiles::Deep        ? "128x128 4-stage"
         : t == Bf16Tiles::WideWarps   ? "128x128 64x64-warp"
         : t == Bf16Tiles::Tall        ? "256x128 64x64-warp"
         : t == Bf16Tiles::Wgmma       ? "4 stages"
         : t == Bf16Tiles::WgmmaTma    ? "4 stages, TMA B"
         : t == Bf16Tiles::WgmmaPaired ? "3 stages, 2 blocks an SM"
         : t == Bf16Tiles::WgmmaTall   ? "256x128, 3 stages"
         : t == Bf16Tiles::WgmmaIm2col ? "4 stages, TMA B, im2col A"
                                       : "128x128";
}


template <class Products = Bf16Products, class LoadA, class LoadB, class Epilogue>
void launch_tiles(Bf16Tiles t, const Gemm& g, LoadA a, LoadB b, Epilogue epilogue,
                  float* planes) {
  if constexpr (std::is_same_v<Products, Tf32Products>) {  // run_gemm: Large or Small
    if (t == Bf16Tiles::Small)
      launch_gemm<SmallTiles, LoadA, LoadB, Epilogue, Products>(g, a, b, epilogue, planes);
    else
      launch_gemm<LargeTiles, LoadA, LoadB, Epilogue, Products>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::Wgmma || t == Bf16Tiles::WgmmaTma || t == Bf16Tiles::WgmmaPaired ||
             t == Bf16Tiles::WgmmaTall || t == Bf16Tiles::WgmmaIm2col) {
    run_v5(t, g, a, b, epilogue, planes);  // conv2d_bf16_v5.cu
  } else if (t == Bf16Tiles::Small) {
    launch_gemm<SmallTiles>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::Deep) {
    launch_gemm<DeepTiles>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::WideWarps) {
    launch_gemm<WideWarpTiles>(g, a, b, epilogue, planes);
  } else if (t == Bf16Tiles::Tall) {
    launch_gemm<TallTiles>(g, a, b, epilogue, planes);
  } else {
    launch_gemm<LargeTiles>(g, a, b, epilogue, planes);
  }
}

// Every choice (v4's block shapes, or v5's schedules) on this call's operands, with the
// call's own epilogue storing into scratch memory (Epilogue::into: the real output may be
// accumulated into, and must not be touched; rows_reached sizes it, a strided dgrad's
// phases writing rows spread over all of dx), so what is timed is the kernel that will
// run: each checked against the first (autotune_check.cuh: the same bits, as every choice
// of a list gives by design, or left out), then the median of 5 timed runs
// (kAutotuneTimedRuns, after the checked one); prints the times and the choice.
template <class LoadA, class LoadB, class Epilogue, size_t kChoices>
Bf16Tiles autotune(const Bf16Tiles (&choices)[kChoices], const char* version, const Gemm& g,
                   LoadA a, LoadB b, const Epilogue& epilogue, float* planes) {
  // every epilogue's rows are n wide (its ld); room for fp32, the widest output, compared
  // as 32-bit words (a bf16 output leaves the rest NaN bytes for every choice alike)
  const int64_t words = epilogue.rows_reached(g.m) * g.n;
  float* scratch = nullptr;
  CUDA_CHECK(cudaMalloc(&scratch, words * sizeof(float)));
  const Epilogue discard = epilogue.into(scratch);
  std::vector<autotune::Timing> timings;
  {
    const autotune::Check check({{scratch, words, autotune::Compare::Bits}});
    timings = autotune::check_and_time(kChoices, check, 0.0, [&](size_t i) {
      launch_tiles(choices[i], g, a, b, discard, planes);
    });
  }
  CUDA_CHECK(cudaFree(scratch));
  std::printf("conv %s autotune: %s %lld x %lld x %lld (K in %d slices):", version, g.pass,
              static_cast<long long>(g.m), static_cast<long long>(g.n),
              static_cast<long long>(g.k), g.splits());
  std::vector<const char*> names;
  for (Bf16Tiles t : choices) names.push_back(tiles_name(t));
  return choices[autotune::print_and_pick(names, timings, 0.0)];
}

// TF32 products (Tf32Products) run on the large or the small tiles only, each the one
// forced (tests) or else the heuristic's: two kernels a pass, not twelve, for a path that
// no GPU has timed yet (the autotuner and v5 stay bf16's).
template <class Products = Bf16Products, class LoadA, class LoadB, class Epilogue>
void run_gemm(const Gemm& g, LoadA a, LoadB b, Epilogue epilogue, float* planes) {
  if (g.m == 0 || g.n == 0) return;
  CHECK(compute_capability() >= 80, "the bf16 tensor-core convolution (v4) needs sm_80 or later, "
                                    "this device is sm_" << compute_capability());
  Bf16Tiles pick = g_tiles;
  constexpr bool kTf32 = std::is_same_v<Products, Tf32Products>;
  if (kTf32 && pick != Bf16Tiles::Large && pick != Bf16Tiles::Small) pick = Bf16Tiles::Heuristic;
  if (pick == Bf16Tiles::Heuristic) {  // large tiles when they alone fill the GPU
    pick = tiles_of<LargeTiles>(g.m, g.n) >= sm_count() ? Bf16Tiles::Large : Bf16Tiles::Small;
  } else if constexpr (!kTf32) {
    if (pick == Bf16Tiles::Autotune || pick == Bf16Tiles::WgmmaAutotune) {
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
  }
  launch_tiles<Products>(pick, g, a, b, epilogue, planes);
}

Gemm forward_gemm(const Conv2dShape& s) {
  return {"forward", s.n * s.out_h() * s.out_w(), s.c_out, s.taps() * round_up8(s.c_in)};
}
Gemm dgrad_gemm(const Conv2dShape& s) {
  return {"dgrad", s.n * s.h * s.w, s.c_in, s.taps() * round_up8(s.c_out)};
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
  return {"wgrad", s.taps() * round_up8(s.c_in), round_up8(s.c_out), s.n * s.out_h() * s.out_w()};
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
            s.n * s.out_h() * s.out_w() < limit && s.n * s.h * s.w < limit &&
            s.taps() * round_up8(s.c_in) * round_up8(s.c_out) < limit,
        "the bf16 tensor-core convolution (v4) takes images of fewer than 2^31 elements "
        "(weights too) and batches of fewer than 2^31 pixels in and out, got "
            << s.n << " x " << s.h << " x " << s.w << " x " << s.c_in << " in, " << s.out_h()
            << " x " << s.out_w() << " x " << s.c_out << " out, weights " << s.kh << " x "
            << s.kw << " x " << s.c_in << " x " << s.c_out);
}

// Both passes lay the workspace out the same way whether or not `base` is null (sizing).
// Operands::Bf16: the caller's activations are bf16 already (the bf16-operand entries), so
// x and dy need no staging where their channels are a multiple of 8 (`operand` reads them
// in place); Operands::Any sizes the staging for fp32 activations too (the entries whose
// workspace functions do not know the storage).
enum class Operands { Any, Bf16 };
int64_t staged(Operands o, int64_t pixels, int64_t c) {
  return o == Operands::Bf16 && c % kChunk == 0 ? 0 : pixels * round_up8(c);
}
struct ForwardBuffers {
  bf16_bits *x8, *w8;
  float* planes;
  int64_t floats;
  bool placed;  // carved from a workspace (not only sized)
  ForwardBuffers(const Conv2dShape& s, float* base, Operands o = Operands::Any)
      : placed(base != nullptr) {
    Carve c(base);
    x8 = c.bf16(staged(o, s.n * s.h * s.w, s.c_in));
    w8 = c.bf16(s.taps() * round_up8(s.c_in) * round_up8(s.c_out));
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
  BackwardBuffers(const Conv2dShape& s, float* base, Operands o = Operands::Any)
      : placed(base != nullptr) {
    Carve c(base);
    x8 = c.bf16(staged(o, s.n * s.h * s.w, s.c_in));
    dy8 = c.bf16(staged(o, s.n * s.out_h() * s.out_w(), s.c_out));
    w8 = c.bf16(s.taps() * s.c_in * round_up8(s.c_out));
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
  DDPM_LAUNCH(weights_to_bf16_padded<S>, grid_for(s.taps() * ci8 * co8), kThreads)(
      s.taps(), s.c_in, ci8, s.c_out, co8, w, staged);
  return staged;
}

// Every entry, for either storage of the operands X and of the results A (float, or bf16
// bits; X = A but for the bf16-operand entries, whose results are fp32). w_bf16: the
// weights' bf16 copy (engine/weight_copy.h) or null: then w is rounded here.
template <class X, class A>
void forward(const Conv2dShape& s, const X* x, const float* w, const float* b, A* y,
             const ForwardBuffers& buf, const float* per_sample, const A* residual,
             const bf16_bits* w_bf16) {
  CHECK(buf.placed, "the bf16 convolution needs conv2d_bf16_forward_workspace floats");
  check_shape_limits(s);
  if constexpr (std::is_same_v<X, A>)  // (the direct kernels take one storage)
    if (g_thin && conv2d_thin_applies(s))  // few output channels: the direct kernels
      return conv2d_thin_forward(s, x, w, w_bf16, b, per_sample, residual, y);
  const int64_t c8 = round_up8(s.c_in), oh_n = s.out_h(), ow_n = s.out_w();
  const bf16_bits* x8 = operand(s.n * s.h * s.w, s.c_in, x, buf.x8);
  const Gemm g = forward_gemm(s);
  const StoreWithAdds<A> epilogue{y, b, per_sample, residual, s.c_out, oh_n * ow_n,
                                  rows_pair(s.c_out, y) && rows_pair(s.c_out, residual)};
  const bf16_bits* w8 =
      w_bf16 ? forward_weights(s, w_bf16, buf.w8) : forward_weights(s, w, buf.w8);
  const KOrder order = KOrder::of(static_cast<int>(s.taps()), static_cast<int>(c8));
  with_gather_cache([&](auto cache) {
    const ForwardA<decltype(cache)::value> a{s, oh_n, ow_n, g.m, static_cast<int>(c8),
                                             x8, order};
    run_gemm(g, a, TapRowsB{round_up8(s.c_out), w8, order}, epilogue, buf.planes);
  });
}

// dx (+)= the dgrad of dy8 (N, OH, OW, Cout8) through w (taps, Cin, Cout), fp32 or the
// weights' bf16 copy. Stride 1: one GEMM over every dx pixel, reading the copy in place when
// Cout is a multiple of 8. Strided: by phase (kernels/dgrad_phases.h), the taps reordered by
// phase into the workspace, then a GEMM per phase with only its live taps, each writing its
// own pixels of dx; a phase no tap reaches is zeros when dx is written, untouched when it
// is added to.
template <ptx::CacheAt kCache, class S, class A>
void dgrad(const Conv2dShape& s, const bf16_bits* dy8, const S* w, const Accumulate<A>& into_dx,
           const BackwardBuffers& buf) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), co8 = round_up8(s.c_out);
  if (s.stride == 1) {
    const bf16_bits* w8 = operand(s.taps() * s.c_in, s.c_out, w, buf.w8);
    const Gemm g = dgrad_gemm(s);
    const KOrder order = KOrder::of(static_cast<int>(s.taps()), static_cast<int>(co8));
    run_gemm(g, DgradA<kCache>{s, oh_n, ow_n, g.m, static_cast<int>(co8), dy8, order},
             DgradB{s, static_cast<int>(co8), w8, order}, into_dx, buf.planes);
    return;
  }
  DDPM_LAUNCH(weights_by_phase<S>, grid_for(s.taps() * s.c_in * co8), kThreads)(s, co8, w,
                                                                              buf.w8);
  for (int p = 0; p < s.stride * s.stride; ++p) {
    const DgradPhase ph = dgrad_phase(s, p);
    const Gemm g = phase_gemm(ph);
    Accumulate<A> into_phase = into_dx;
    into_phase.rows = PhaseRows::of(s, ph);
    if (g.k > 0) {
      const KOrder order = KOrder::of(static_cast<int>(ph.shape.taps()), static_cast<int>(co8));
      run_gemm(g, DgradA<kCache>{ph.shape, oh_n, ow_n, g.m, static_cast<int>(co8), dy8, order},
               DgradB{ph.shape, static_cast<int>(co8), buf.w8 + ph.first_tap * s.c_in * co8,
                      order},
               into_phase, buf.planes);
    } else if (!into_dx.add && g.m > 0) {  // the sum of no planes through the epilogue: 0
      DDPM_LAUNCH(reduce_planes<Accumulate<A>>, grid_for(g.m * ColumnPair::pairs(g.n)),
                  kThreads)(g.m, g.n, 0, nullptr, into_phase);
    }
  }
}

template <class X, class A>
void backward(const Conv2dShape& s, const X* x, const float* w, const X* dy, A* dx, float* dw,
              const BackwardBuffers& buf, const bf16_bits* w_bf16, GradWrite dx_write,
              GradWrite dw_write) {
  if (!dx && !dw) return;
  CHECK(buf.placed, "the bf16 convolution needs conv2d_bf16_backward_workspace floats");
  check_shape_limits(s);
  if constexpr (std::is_same_v<X, A>)  // (the direct kernels take one storage)
    if (g_thin && conv2d_thin_applies(s))  // few output channels: the direct kernels
      return conv2d_thin_backward(s, x, w, w_bf16, dy, dx, dw, buf.thin_planes, dx_write,
                                  dw_write);
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), ci8 = round_up8(s.c_in),
                co8 = round_up8(s.c_out);
  const bf16_bits* dy8 = operand(s.n * oh_n * ow_n, s.c_out, dy, buf.dy8);
  if (dx) {
    const Accumulate<A> into_dx{dx, s.c_in, dx_write == GradWrite::Accumulate,
                                rows_pair(s.c_in, dx)};
    with_gather_cache([&](auto cache) {
      if (w_bf16) {
        dgrad<decltype(cache)::value>(s, dy8, w_bf16, into_dx, buf);
      } else {
        dgrad<decltype(cache)::value>(s, dy8, w, into_dx, buf);
      }
    });
  }
  if (dw) {
    const bf16_bits* x8 = operand(s.n * s.h * s.w, s.c_in, x, buf.x8);
    const Gemm g = wgrad_gemm(s);
    const KOrder order = KOrder::of(static_cast<int>(s.taps()), static_cast<int>(ci8));
    const AccumulateWgrad into_dw{dw, s.c_in, s.c_out, order,
                                  dw_write == GradWrite::Accumulate, rows_pair(s.c_out, dw)};
    with_gather_cache([&](auto cache) {
      run_gemm(g,
               WgradA<decltype(cache)::value>{s, oh_n, ow_n, g.m, static_cast<int>(ci8), x8,
                                              order,
                                              PixelStep::of(oh_n, ow_n, s.h * s.w * ci8)},
               DenseRowsB{co8, dy8}, into_dw, buf.planes);
    });
  }
}

// ---- TF32 products on fp32 operands (conv2d_tf32.cu) ------------------------------------
// An fp32 tensor of C channels read as bf16_bits of 2C: the same bytes, a TF32 value's two
// 16-bit halves side by side, so the loaders gather it unchanged and ldmatrix hands each
// lane whole values (Tf32Products). Every count the loaders take is then in halves: the
// reduction's channels 2C, K = taps x 2C, a stage 16 values.
const bf16_bits* halves(const float* p) { return reinterpret_cast<const bf16_bits*>(p); }

// The loaders' limits (check_shape_limits) on the halves' counts, and whole 16-byte chunks
// of the reduction's channels (4 values).
void check_halves_limits(Conv2dShape s, int64_t reduction_channels) {
  CHECK(reduction_channels % 4 == 0, "the TF32 convolution on mma.sync reads 16-byte chunks "
                                     "of 4 channels, got " << reduction_channels);
  s.c_in *= 2;
  s.c_out *= 2;
  check_shape_limits(s);
}

Gemm tf32_forward_gemm(const Conv2dShape& s) {
  return {"forward", s.n * s.out_h() * s.out_w(), s.c_out, s.taps() * 2 * s.c_in};
}
Gemm tf32_dgrad_gemm(const Conv2dShape& s) {
  return {"dgrad", s.n * s.h * s.w, s.c_in, s.taps() * 2 * s.c_out};
}

}  // namespace
}  // namespace conv_bf16

using namespace conv_bf16;  // (this file's own pieces)

void set_conv2d_bf16_tiles(Bf16Tiles t) { g_tiles = t; }
Bf16Tiles conv2d_bf16_tiles() { return g_tiles; }
void set_conv2d_bf16_thin(bool on) { g_thin = on; }
bool conv2d_bf16_thin() { return g_thin; }
void set_conv2d_bf16_gathers_through_l1(bool on) { g_gathers_through_l1 = on; }
bool conv2d_bf16_gathers_through_l1() { return g_gathers_through_l1; }
void set_conv2d_bf16_v5_warp_specialised(bool on) { g_v5_warp_specialised = on; }
bool conv2d_bf16_v5_warp_specialised() { return g_v5_warp_specialised; }

int conv2d_bf16_split_k(int64_t m, int64_t n, int64_t k) { return Gemm{"", m, n, k}.splits(); }

int64_t conv2d_bf16_forward_workspace(const Conv2dShape& s) {
  return ForwardBuffers(s, nullptr).floats;
}

int64_t conv2d_bf16_backward_workspace(const Conv2dShape& s) {
  return BackwardBuffers(s, nullptr).floats;
}

void conv2d_bf16_forward(const Conv2dShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const float* per_sample,
                         const float* residual, const uint16_t* w_bf16) {
  forward(s, x, w, b, y, ForwardBuffers(s, workspace), per_sample, residual, w_bf16);
}

void conv2d_bf16_forward(const Conv2dShape& s, const uint16_t* x, const float* w, const float* b,
                         uint16_t* y, float* workspace, const float* per_sample,
                         const uint16_t* residual, const uint16_t* w_bf16) {
  forward(s, x, w, b, y, ForwardBuffers(s, workspace), per_sample, residual, w_bf16);
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

int64_t conv2d_bf16_operands_forward_workspace(const Conv2dShape& s) {
  return ForwardBuffers(s, nullptr, Operands::Bf16).floats;
}

void conv2d_bf16_operands_forward(const Conv2dShape& s, const uint16_t* x, const uint16_t* w,
                                  const float* b, float* y, float* workspace,
                                  const float* per_sample, const float* residual) {
  forward(s, x, static_cast<const float*>(nullptr), b, y,
          ForwardBuffers(s, workspace, Operands::Bf16), per_sample, residual, w);
}

int64_t conv2d_bf16_operands_backward_workspace(const Conv2dShape& s) {
  return BackwardBuffers(s, nullptr, Operands::Bf16).floats;
}

void conv2d_bf16_operands_dgrad(const Conv2dShape& s, const uint16_t* dy, const uint16_t* w,
                                float* dx, float* workspace, GradWrite dx_write) {
  backward(s, static_cast<const uint16_t*>(nullptr), nullptr, dy, dx, nullptr,
           BackwardBuffers(s, workspace, Operands::Bf16), w, dx_write, GradWrite::Accumulate);
}

void conv2d_bf16_operands_wgrad(const Conv2dShape& s, const uint16_t* x, const uint16_t* dy,
                                float* dw, float* workspace, GradWrite dw_write) {
  backward(s, x, nullptr, dy, static_cast<float*>(nullptr), dw,
           BackwardBuffers(s, workspace, Operands::Bf16), nullptr, GradWrite::Accumulate,
           dw_write);
}

int64_t conv2d_tf32_mma_forward_workspace(const Conv2dShape& s) {
  return tf32_forward_gemm(s).plane_floats();
}

// B is the weights transposed, (taps, Cout, Cin): K-major rows of Cout, read by the dgrad's
// B loader with the roles of Cin and Cout swapped (its rows are then Cout of them, each
// taps x 2 Cin halves long, a tap 2 Cin apart).
void conv2d_tf32_mma_forward(const Conv2dShape& s, const float* x, const float* w_t,
                             const float* b, float* y, float* workspace,
                             const float* per_sample, const float* residual) {
  check_halves_limits(s, s.c_in);
  const int c8 = static_cast<int>(2 * s.c_in);
  const int64_t oh_n = s.out_h(), ow_n = s.out_w();
  const Gemm g = tf32_forward_gemm(s);
  const KOrder order = KOrder::of(static_cast<int>(s.taps()), c8);
  Conv2dShape rows = s;
  rows.c_in = s.c_out;
  const StoreWithAdds<float> epilogue{y, b, per_sample, residual, s.c_out, oh_n * ow_n,
                                      rows_pair(s.c_out, y) && rows_pair(s.c_out, residual)};
  run_gemm<Tf32Products>(g, ForwardA<>{s, oh_n, ow_n, g.m, c8, halves(x), order},
                         DgradB{rows, c8, halves(w_t), order}, epilogue, workspace);
}

int64_t conv2d_tf32_mma_dgrad_workspace(const Conv2dShape& s) {
  return tf32_dgrad_gemm(s).plane_floats();
}

void conv2d_tf32_mma_dgrad(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                           float* workspace, GradWrite dx_write) {
  CHECK(s.stride == 1, "the TF32 dgrad on mma.sync takes stride 1, got " << s.stride);
  check_halves_limits(s, s.c_out);
  const int c8 = static_cast<int>(2 * s.c_out);
  const Gemm g = tf32_dgrad_gemm(s);
  const KOrder order = KOrder::of(static_cast<int>(s.taps()), c8);
  const Accumulate<float> into_dx{dx, s.c_in, dx_write == GradWrite::Accumulate,
                                  rows_pair(s.c_in, dx)};
  run_gemm<Tf32Products>(g, DgradA<>{s, s.out_h(), s.out_w(), g.m, c8, halves(dy), order},
                         DgradB{s, c8, halves(w), order}, into_dx, workspace);
}

}  // namespace ddpm::cuda
