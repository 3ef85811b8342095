// Self-attention backward on bf16 tensor cores: FlashAttention-2's backward on mma.sync, the
// tensor-core counterpart of attention_fused.cu's dq / dkv kernels (read them side by side).
// Same contract: accumulates into dqkv (B, L, 3C) from qkv, out, lse and dout (f32), or
// writes it outright (GradWrite::Assign).
//
// With delta_i = dout_i . out_i (attention_delta, fp32), for query row i and key j:
//   P_ij = exp(q_i.k_j * scale - lse_i)   dP_ij = dout_i . v_j   dS_ij = P_ij (dP_ij - delta_i) * scale
//   dq_i += sum_j dS_ij k_j     (dq kernel: a block per 64 queries, looping over key tiles)
//   dk_j += sum_i dS_ij q_i     (dkv kernel: a block per 64 keys, looping over query tiles)
//   dv_j += sum_i P_ij dout_i
// Every output row is owned by one block and summed in a fixed order: no atomics, the same
// bits every run. P and dS are computed twice (once per kernel), on chip.
//
// Or dq by GEMM (bf16 activations, when the caller gives dS a buffer: attention.cuh): the
// dkv kernel also stores dS^T, rounded to bf16 as its own products use it (store_ds), and
// dq = dS k is one cuBLAS strided-batched GEMM per head (dq_by_gemm). The dq kernel's
// recomputation of S and dP, 2 of the backward's 7 products of L x L x d, goes; what comes
// instead is B H L^2 bf16 written and read back, d FLOPs saved per byte. At the model's
// L = 256, d = 256 that is 17 MB against 8.6 GFLOP, where the kernels run at ~80 TFLOP/s
// (the H200's 0.387 ms for 30 GFLOP, docs/gpu-report.md).
//
// On tensor cores (mma.m16n8k16, bf16 operands, fp32 accumulation): q, k, v and dout are
// rounded to bf16 as they are staged into shared memory (flash_bf16.cuh); P and dS are
// rounded where they become the A operand of the next product. S, dP, the softmax
// statistics and every accumulator stay fp32.
//
// Warps: a block owns 64 rows (keys in dkv, queries in dq), 16 per row group. Up to d = 128
// a group is one warp holding all the head's channels (dk and dv: 2 x d/2 floats per
// thread, 128 at d = 128). At d = 256 that would be 256 and spill, so there a group is two
// warps (Tiles::kParts = 2, 8 warps a block) that split the work twice: the scores by
// columns (each computes S and dP of 16 of the step's 32 columns, over every channel) and
// the gradients by channels (each accumulates half of the rows' channels, over all 32
// columns). Between the two, each hands its P and dS of its 16 columns, already rounded to
// bf16 A fragments, to the other through shared memory (publish / partners: 1 KB a warp).
//
// Per step (32 columns: queries in dkv, keys in dq), warp (group, part):
//   S, dP  (16 x 32 / parts)  over all D channels
//   P, dS  from S, dP and the columns' (dkv) or rows' (dq) lse and delta; to bf16 fragments
//   dkv:   dv += P^T x dout[cols, part's channels]     dk += dS^T x q[cols, part's channels]
//   dq:    dq += dS x k[cols, part's channels]
//          (split groups: the warp's own 16 columns first, then, past a barrier, the
//          partner's)
// In dkv the warp's rows are keys, so what it computes is S^T = K Q^T and dP^T = V dout^T:
// the same code with the roles of the tiles swapped. The A operand of the second product
// comes straight from the accumulators of the first (attention_flash_bf16.cu, step 3); its B
// operand (rows = the step's columns, channels along the row) is read with ldmatrix.trans.
//
// Why this shape (the first version split every d into a 2 x 2 grid of warps over 32 rows,
// each warp's scores partial over half the channels and the halves added in shared memory):
// that exchange cost each warp, every step, 32 shared stores, 32 loads and 32 adds of fp32
// partials, and both warps of a pair then computed the same P and dS. Now no warp computes
// an exponential another also computes, split groups swap 8 words of bf16 fragments a lane
// instead of 32 floats, and groups up to d = 128 swap nothing. Each staged step tile serves
// 64 rows instead of 32. sm_90 SASS per step and warp (scripts/sass_loops.py; static
// counts, with the tile copies of flash_bf16.cuh's TileWalk; docs/kernels.md has every d):
// dkv at d = 256 went from 1100 instructions to 464 around the same 128 mma; at d = 64 from
// 555 around 32 mma to 357 around 64.
//
// Launch constants: 32 columns per step keep each warp's S and dP at 16 floats (8 when
// split); 64 rows (4 groups) a block, so that each step's tiles are read by four row
// groups, and the own tiles (2 x 64 rows) stay within shared memory at d = 256. Shared
// memory: 21 / 37 / 69 / 141 KB at d = 32 / 64 / 128 / 256 on bf16 activations (two step
// stages), 15 / 27 / 51 / 107 KB on fp32 ones (one). ptxas (sm_90) in docs/kernels.md.
//
// On bf16 activations (A = bf16 bits) the rows need no conversion: the per-step tiles are
// copied by cp.async into two stages, step i + 1 in flight while step i is multiplied, one
// barrier per step (two in split groups). fp32 rows are converted through registers, one
// stage.
#include <cmath>
#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/blas.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/flash_bf16.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace flash {

// The row length of the dS buffer (dq by GEMM): L rounded up to 8 elements, so that every
// row starts 16-byte aligned (cuBLAS's tensor-core loads) and a lane's pair of queries is
// one aligned 4-byte store even when L is odd.
int64_t ds_row_length(int64_t l) { return (l + 7) / 8 * 8; }

// dq (rows of L x d per batch and head, in dqkv with ld 3C) = dS k, from dS^T stored as
// ds[key][query] (ld ds_ld). Column-major, as cuBLAS sees the row-major buffers:
//   dq^T (d x L, ld 3C) = k^T (d x L, ld 3C) x Y^T,  Y = ds read column-major (L x L, ld
//   ds_ld), whose element (i, j) is dS_ij: gemm(N, T, m = d, n = L, k = L)
// bf16 operands and dq, fp32 sums, dq = bf16(sum + float(dq)) when adding (beta 1). One
// strided-batched call per head (heads are not one stride apart from batch to batch).
void dq_by_gemm(const AttentionShape& s, const uint16_t* qkv, const uint16_t* ds, int64_t ds_ld,
                uint16_t* dqkv, bool add) {
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  const int64_t d = s.head_dim(), ld_qkv = 3 * s.c;
  const float one = 1.0f, beta = add ? 1.0f : 0.0f;
  for (int64_t h = 0; h < s.heads; ++h)
    CUBLAS_CHECK(blas::api().gemm_strided_batched_ex(
        blas::handle(), CUBLAS_OP_N, CUBLAS_OP_T, i(d), i(s.l), i(s.l), &one,
        qkv + s.c + h * d, CUDA_R_16BF, i(ld_qkv), s.l * ld_qkv, ds + h * s.l * ds_ld,
        CUDA_R_16BF, i(ds_ld), s.heads * s.l * ds_ld, &beta, dqkv + h * d, CUDA_R_16BF,
        i(ld_qkv), s.l * ld_qkv, i(s.b), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace flash

namespace {

using flash::dq_by_gemm;
using flash::ds_row_length;

using flash::kPad;
using flash::stage_rows;

// The block for head dim D: 4 row groups of 16 rows, each group Parts warps (2 only at
// d = 256, where one warp's dk and dv would spill; see the top). The warps of a group split
// the step's 32 columns for the scores and the head's channels for the gradients.
template <int D>
struct Tiles {
  static constexpr int kGroups = 4;
  static constexpr int kParts = D >= 256 ? 2 : 1;
  static constexpr int kWarps = kGroups * kParts;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRows = 16 * kGroups;          // rows a block owns
  static constexpr int kChannels = D / kParts;        // a warp's gradient channels
  static constexpr int kScoreTiles = 4 / kParts;      // a warp's 8-column n-tiles of S, dP
  static constexpr int kChunks = kScoreTiles / 2;     // ... as 16-column A fragments
  static_assert(kParts == 1 || kParts == 2, "a group's warps share 32 columns in 16s");
};
constexpr int kCols = 32;  // columns per step


// A: the storage of qkv and dout. bf16 rows are copied by cp.async, so the per-step tiles
// (and the dkv kernel's column statistics) get two stages: step i + 1 in flight while step
// i is multiplied. fp32 rows are converted through registers, one stage.
template <class A>
constexpr int kStepStages = sizeof(A) == 2 ? 2 : 1;

// Shared memory, in this order: the block's own two tiles (kRows rows each), per step stage
// the step's two tiles (kCols rows each), the exchange of P and dS fragments (split groups
// only: 2 x 16 bytes per lane and warp), and per stage the columns' lse (base 2) and delta
// (kCols floats each). A stage's tiles are found by arithmetic on the stage (step_a(st)),
// not by indexing an array of pointers: a runtime index into one puts it in local memory.
template <int D, class A>
struct Smem {
  static constexpr int kLd = D + kPad;
  static constexpr int kStages = kStepStages<A>;
  static constexpr size_t kOwnTile = size_t(Tiles<D>::kRows) * kLd;  // bf16 elements
  static constexpr size_t kStepTile = size_t(kCols) * kLd;
  static constexpr size_t kTileBytes =
      (2 * kOwnTile + 2 * kStages * kStepTile) * sizeof(uint16_t);
  static constexpr size_t kExchange =  // uint4s: [warp][P or dS][lane]
      Tiles<D>::kParts > 1 ? Tiles<D>::kWarps * 2 * 32 : 0;
  static constexpr size_t kBytes =
      kTileBytes + kExchange * sizeof(uint4) + 2 * kStages * kCols * sizeof(float);

  uint16_t* base;
  __device__ uint16_t* own_a() const { return base; }
  __device__ uint16_t* own_b() const { return base + kOwnTile; }
  __device__ uint16_t* step_a(int st) const { return base + 2 * kOwnTile + 2 * st * kStepTile; }
  __device__ uint16_t* step_b(int st) const { return step_a(st) + kStepTile; }
  // [warp][P or dS][lane]: a warp's 512 bytes of one operand are contiguous, 4 wavefronts.
  __device__ uint4* exchange() const { return reinterpret_cast<uint4*>(base + kTileBytes / 2); }
  __device__ float* col_lse(int st) const {
    return reinterpret_cast<float*>(exchange() + kExchange) + 2 * st * kCols;
  }
  __device__ float* col_delta(int st) const { return col_lse(st) + kCols; }
};

// The warp's place in the block: rows [row0, row0 + 16); score columns [col0, col0 + 32 /
// kParts) of each step; gradient channels [c0, c0 + kChannels).
template <int D>
struct WarpPlace {
  int lane, warp, part, row0, col0, c0;
  __device__ WarpPlace()
      : lane(threadIdx.x % 32),
        warp(threadIdx.x / 32),
        part(warp % Tiles<D>::kParts),
        row0(16 * (warp / Tiles<D>::kParts)),
        col0(part * 8 * Tiles<D>::kScoreTiles),
        c0(part * Tiles<D>::kChannels) {}
};

// A warp's scores: 16 rows x kScoreTiles n-tiles of 8 columns, in accumulator layout.
template <int D>
using Scores = float[Tiles<D>::kScoreTiles][4];

// acc = the dot products, over all D channels, of the warp's rows a[row0 + r] with the
// step's rows b[col0 + j] (a and b shared bf16 tiles, rows along the first index).
template <int D>
__device__ void dot_rows(const uint16_t* a, const uint16_t* b, const WarpPlace<D>& w,
                         Scores<D>& acc) {
  constexpr int kLd = D + kPad;
  const int q8 = w.lane / 8, i8 = w.lane % 8;
  for (int n = 0; n < Tiles<D>::kScoreTiles; ++n)
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
  for (int kk = 0; kk < D; kk += 16) {
    uint32_t af[4];
    ptx::ldmatrix_x4(af, a + (w.row0 + w.lane % 16) * kLd + kk + 8 * (w.lane / 16));
    for (int n = 0; n < Tiles<D>::kScoreTiles; n += 2) {
      uint32_t r[4];  // matrix q8: columns col0 + 8n + 8 (q8 >> 1), channels kk + 8 (q8 & 1)
      ptx::ldmatrix_x4(r, b + (w.col0 + 8 * n + 8 * (q8 >> 1) + i8) * kLd + kk + 8 * (q8 & 1));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_bf16_16816(acc[n], af, b0);
      ptx::mma_bf16_16816(acc[n + 1], af, b1);
    }
  }
}

// x (P or dS of the warp's columns) rounded to bf16 A fragments, one per 16 columns: the
// accumulator layout of n-tiles 2c, 2c + 1 is the A layout of chunk c.
template <int D>
struct Operand {
  uint4 chunk[Tiles<D>::kChunks];
  __device__ explicit Operand(const Scores<D>& x) {
    for (int c = 0; c < Tiles<D>::kChunks; ++c)
      chunk[c] = make_uint4(bf16_pair(x[2 * c][0], x[2 * c][1]),
                            bf16_pair(x[2 * c][2], x[2 * c][3]),
                            bf16_pair(x[2 * c + 1][0], x[2 * c + 1][1]),
                            bf16_pair(x[2 * c + 1][2], x[2 * c + 1][3]));
  }
};

// A warp's gradient rows: 16 rows x its kChannels channels, in accumulator layout.
template <int D>
using GradRows = float[Tiles<D>::kChannels / 8][4];

// acc (16 rows x kChannels from c0) += a (16 rows x the 16 columns from col, A fragment)
// times b[col + j][c0 + ...] (b's rows are the step's columns), read with ldmatrix.trans.
template <int D>
__device__ void accumulate_chunk(const uint4& a, const uint16_t* b, int col,
                                 const WarpPlace<D>& w, GradRows<D>& acc) {
  constexpr int kLd = D + kPad;
  const int q8 = w.lane / 8, i8 = w.lane % 8;
  const uint32_t af[4] = {a.x, a.y, a.z, a.w};
  for (int dn = 0; dn < Tiles<D>::kChannels / 8; dn += 2) {
    uint32_t r[4];  // matrix q8: columns col + 8 (q8 & 1), channels c0 + 8 dn + 8 (q8 >> 1)
    ptx::ldmatrix_x4_trans(r, b + (col + 8 * (q8 & 1) + i8) * kLd + w.c0 + 8 * dn +
                                  8 * (q8 >> 1));
    const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
    ptx::mma_bf16_16816(acc[dn], af, b0);
    ptx::mma_bf16_16816(acc[dn + 1], af, b1);
  }
}

// acc += x b over the warp's own score columns.
template <int D>
__device__ void accumulate_own(const Operand<D>& x, const uint16_t* b, const WarpPlace<D>& w,
                               GradRows<D>& acc) {
  for (int c = 0; c < Tiles<D>::kChunks; ++c)
    accumulate_chunk(x.chunk[c], b, w.col0 + 16 * c, w, acc);
}

// In a split group: this warp's fragment of operand `which` (0: P, 1: dS) for its partner,
// and (after a barrier) the partner's for this warp, whose columns are the other 16.
template <int D, class A>
__device__ void publish(const Smem<D, A>& m, const WarpPlace<D>& w, int which,
                        const Operand<D>& x) {
  m.exchange()[(2 * w.warp + which) * 32 + w.lane] = x.chunk[0];
}
template <int D, class A>
__device__ uint4 partners(const Smem<D, A>& m, const WarpPlace<D>& w, int which) {
  return m.exchange()[(2 * (w.warp ^ 1) + which) * 32 + w.lane];
}

// dst[row][c0 + channel] += acc (= acc when not add) for the warp's 16 rows (row i of the
// block at dst + i * stride; rows at or past `rows` are not written). A: fp32 or bf16 bits
// (storage.cuh: the add in fp32, a bf16 element rounded once).
template <int D, class A>
__device__ void store_rows(A* dst, int64_t stride, int rows, const WarpPlace<D>& w,
                           const GradRows<D>& acc, bool add) {
  const int g = w.lane / 4, t = w.lane % 4;
  for (int r = 0; r < 2; ++r) {
    const int row = w.row0 + g + 8 * r;
    if (row >= rows) continue;
    A* const d = dst + row * stride + w.c0 + 2 * t;
    for (int dn = 0; dn < Tiles<D>::kChannels / 8; ++dn) {
      store_grad(d, 8 * dn, acc[dn][2 * r], add);
      store_grad(d, 8 * dn + 1, acc[dn][2 * r + 1], add);
    }
  }
}

// The per-step tiles of both kernels: rows [c0, c0 + kCols) of a and b (row stride
// stride_a, stride_b) into stage st, asynchronously (committed, not waited for) for bf16.
template <int D, class A>
__device__ void stage_step(const Smem<D, A>& m, int st, const A* a, int64_t stride_a,
                           const A* b, int64_t stride_b, int rows) {
  if constexpr (kStepStages<A> == 2) {
    flash::copy_rows<D, kCols, Tiles<D>::kThreads>(m.step_a(st), a, stride_a, rows);
    flash::copy_rows<D, kCols, Tiles<D>::kThreads>(m.step_b(st), b, stride_b, rows);
    ptx::cp_async_commit();
  } else {
    stage_rows<D, kCols, Tiles<D>::kThreads>(m.step_a(st), a, stride_a, rows);
    stage_rows<D, kCols, Tiles<D>::kThreads>(m.step_b(st), b, stride_b, rows);
  }
}

// The top of step `step` of a kernel's loop; `issue(i, st)` stages step i into stage st.
// bf16: step `step` was issued one step ahead; wait for it, and once every warp is past
// step - 1 (the barrier), issue step + 1 into the other stage. fp32: stage it now.
// Returns the stage step `step` is in.
template <class A, class Issue>
__device__ int begin_step(int64_t step, int64_t steps, Issue&& issue) {
  if constexpr (kStepStages<A> == 2) {
    const int st = static_cast<int>(step % 2);
    ptx::cp_async_wait<0>();  // this thread's copies of step `step` have landed
    __syncthreads();          // everyone's; and the tiles and exchange of step - 1 are free
    if (step + 1 < steps) issue(step + 1, 1 - st);
    return st;
  } else {
    __syncthreads();  // the previous step's tiles and exchange are no longer read
    issue(step, 0);
    __syncthreads();
    return 0;
  }
}

// dS^T of the warp's rows (keys) and its own columns (queries i0 + ...), as rounded for the
// products, to ds[key][query] (row `row` of the block at ds + row * ld; ld even, so each
// lane's pairs of adjacent queries are one 4-byte store). Keys at or past `keys` and queries
// at or past L are not written: the dq GEMM reads L x L.
template <int D>
__device__ void store_ds(uint16_t* ds, int64_t ld, int keys, int64_t i0, int64_t l,
                         const WarpPlace<D>& w, const Operand<D>& x) {
  const int g = w.lane / 4, t = w.lane % 4;
  for (int c = 0; c < Tiles<D>::kChunks; ++c) {
    // the A fragment's words: (row g, columns 2t, 2t + 1), (g + 8, the same), then both
    // rows at columns 8 + 2t, 8 + 2t + 1
    const uint32_t words[4] = {x.chunk[c].x, x.chunk[c].y, x.chunk[c].z, x.chunk[c].w};
    for (int e = 0; e < 4; ++e) {
      const int row = w.row0 + g + 8 * (e & 1);
      const int64_t col = i0 + w.col0 + 16 * c + 8 * (e >> 1) + 2 * t;
      if (row < keys && col < l) *reinterpret_cast<uint32_t*>(ds + row * ld + col) = words[e];
    }
  }
}

// grid (ceil(L / 64), B * H): dk and dv of 64 keys. own: k, v; per step: q, dout of 32 queries.
// A: the storage of qkv, dout and dqkv (fp32, or bf16 bits for bf16 activations). ds: null,
// or where dS^T goes for the dq GEMM (B * H blocks of L keys x ds_ld, store_ds).
template <int D, class A>
__global__ void __launch_bounds__(Tiles<D>::kThreads)
flash_dkv_bf16(AttentionShape s, float scale, const A* qkv, const float* lse,
               const float* delta, const A* dout, A* dqkv, bool add, uint16_t* ds,
               int64_t ds_ld) {
#if DDPM_HAS_SM80_TENSOR_CORES
  DDPM_DYNAMIC_SHARED(uint16_t, smem);
  constexpr int kRows = Tiles<D>::kRows, kThreads = Tiles<D>::kThreads;
  const Smem<D, A> m{smem};
  const WarpPlace<D> w;
  const float scale_log2 = scale * flash::kLog2e;  // P = exp2(s scale_log2 - lse log2 e)
  const int t = w.lane % 4;
  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kRows, stride = 3 * s.c;
  const A* const base = qkv + b * s.l * stride + h * D;
  const A* const dbase = dout + b * s.l * s.c + h * D;
  const int keys = static_cast<int>(s.l - j0 < kRows ? s.l - j0 : kRows);
  uint16_t* const ds_rows = ds ? ds + (bh * s.l + j0) * ds_ld : nullptr;
  stage_rows<D, kRows, kThreads>(m.own_a(), base + j0 * stride + s.c, stride, keys);
  stage_rows<D, kRows, kThreads>(m.own_b(), base + j0 * stride + 2 * s.c, stride, keys);

  // step i: q and dout of queries [32 i, 32 i + 32), their lse and delta
  const auto issue = [&](int64_t step, int stage) {
    const int64_t i0 = step * kCols;
    const int queries = static_cast<int>(s.l - i0 < kCols ? s.l - i0 : kCols);
    stage_step<D>(m, stage, base + i0 * stride, stride, dbase + i0 * s.c, s.c, queries);
    if (threadIdx.x < kCols) {
      const bool valid = static_cast<int>(threadIdx.x) < queries;
      // lse in base 2 (flash_bf16.cuh, kLog2e): P = exp2(s scale log2 e - lse log2 e)
      m.col_lse(stage)[threadIdx.x] =
          valid ? lse[bh * s.l + i0 + threadIdx.x] * flash::kLog2e : 0.0f;
      m.col_delta(stage)[threadIdx.x] = valid ? delta[bh * s.l + i0 + threadIdx.x] : 0.0f;
    }
  };
  const int64_t steps = (s.l + kCols - 1) / kCols;
  if constexpr (kStepStages<A> == 2) issue(0, 0);  // step 0 in flight before the loop

  GradRows<D> dk = {}, dv = {};
  for (int64_t step = 0; step < steps; ++step) {
    const int stage = begin_step<A>(step, steps, issue);
    const uint16_t *const q = m.step_a(stage), *const dq_out = m.step_b(stage);
    const float *const col_lse = m.col_lse(stage), *const col_delta = m.col_delta(stage);
    Scores<D> st, dpt;  // S^T and dP^T: rows = keys, columns = the warp's queries
    dot_rows(m.own_a(), q, w, st);
    dot_rows(m.own_b(), dq_out, w, dpt);
    // Queries past L need no mask: their q and dout rows are staged as zeros and their lse
    // and delta as 0, so P^T = 1 and dS^T = 0 there, and P^T dout and dS^T q add nothing.
    for (int n = 0; n < Tiles<D>::kScoreTiles; ++n)
      for (int e = 0; e < 4; ++e) {
        const int i = w.col0 + 8 * n + 2 * t + (e & 1);
        const float p = exp2f(fmaf(st[n][e], scale_log2, -col_lse[i]));
        st[n][e] = p;                                         // P^T
        dpt[n][e] = p * (dpt[n][e] - col_delta[i]) * scale;  // dS^T
      }
    const Operand<D> p(st), dst(dpt);
    if constexpr (Tiles<D>::kParts == 2) publish(m, w, 0, p), publish(m, w, 1, dst);
    if (ds_rows) store_ds(ds_rows, ds_ld, keys, step * kCols, s.l, w, dst);
    accumulate_own(p, dq_out, w, dv);  // dv += P^T dout
    accumulate_own(dst, q, w, dk);     // dk += dS^T q
    if constexpr (Tiles<D>::kParts == 2) {  // the partner's 16 queries
      __syncthreads();
      accumulate_chunk(partners(m, w, 0), dq_out, w.col0 ^ 16, w, dv);
      accumulate_chunk(partners(m, w, 1), q, w.col0 ^ 16, w, dk);
    }
  }
  A* const dk_rows = dqkv + (b * s.l + j0) * stride + s.c + h * D;
  store_rows(dk_rows, stride, keys, w, dk, add);
  store_rows(dk_rows + s.c, stride, keys, w, dv, add);
#endif
}

// grid (ceil(L / 64), B * H): dq of 64 queries. own: q, dout; per step: k, v of 32 keys.
template <int D, class A>
__global__ void __launch_bounds__(Tiles<D>::kThreads)
flash_dq_bf16(AttentionShape s, float scale, const A* qkv, const float* lse,
              const float* delta, const A* dout, A* dqkv, bool add) {
#if DDPM_HAS_SM80_TENSOR_CORES
  DDPM_DYNAMIC_SHARED(uint16_t, smem);
  constexpr int kRows = Tiles<D>::kRows, kThreads = Tiles<D>::kThreads;
  const Smem<D, A> m{smem};
  const WarpPlace<D> w;
  const float scale_log2 = scale * flash::kLog2e;  // P = exp2(s scale_log2 - lse log2 e)
  const int g = w.lane / 4;
  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kRows, stride = 3 * s.c;
  const A* const base = qkv + b * s.l * stride + h * D;
  const int queries = static_cast<int>(s.l - i0 < kRows ? s.l - i0 : kRows);
  stage_rows<D, kRows, kThreads>(m.own_a(), base + i0 * stride, stride, queries);
  stage_rows<D, kRows, kThreads>(m.own_b(), dout + (b * s.l + i0) * s.c + h * D, s.c,
                                 queries);
  float row_lse[2], row_delta[2];  // of this lane's rows g and g + 8
  for (int r = 0; r < 2; ++r) {
    const int row = w.row0 + g + 8 * r;
    row_lse[r] = row < queries ? lse[bh * s.l + i0 + row] * flash::kLog2e : 0.0f;  // base 2
    row_delta[r] = row < queries ? delta[bh * s.l + i0 + row] : 0.0f;
  }

  // step j: k and v of keys [32 j, 32 j + 32)
  const auto issue = [&](int64_t step, int stage) {
    const int64_t j0 = step * kCols;
    const int keys = static_cast<int>(s.l - j0 < kCols ? s.l - j0 : kCols);
    stage_step<D>(m, stage, base + j0 * stride + s.c, stride, base + j0 * stride + 2 * s.c,
                  stride, keys);
  };
  const int64_t steps = (s.l + kCols - 1) / kCols;
  if constexpr (kStepStages<A> == 2) issue(0, 0);  // step 0 in flight before the loop

  GradRows<D> dq = {};
  for (int64_t step = 0; step < steps; ++step) {
    const int stage = begin_step<A>(step, steps, issue);
    const uint16_t *const k = m.step_a(stage), *const v = m.step_b(stage);
    Scores<D> sc, dp;  // rows = queries, columns = the warp's keys
    dot_rows(m.own_a(), k, w, sc);
    dot_rows(m.own_b(), v, w, dp);
    // Keys past L need no mask (unlike the forward's softmax, which normalises over them):
    // their k rows are staged as zeros, so whatever dS is there, dS k adds nothing.
    for (int n = 0; n < Tiles<D>::kScoreTiles; ++n)
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float p = exp2f(fmaf(sc[n][e], scale_log2, -row_lse[r]));
        dp[n][e] = p * (dp[n][e] - row_delta[r]) * scale;  // dS
      }
    const Operand<D> ds(dp);
    if constexpr (Tiles<D>::kParts == 2) publish(m, w, 0, ds);
    accumulate_own(ds, k, w, dq);  // dq += dS k
    if constexpr (Tiles<D>::kParts == 2) {  // the partner's 16 keys
      __syncthreads();
      accumulate_chunk(partners(m, w, 0), k, w.col0 ^ 16, w, dq);
    }
  }
  store_rows(dqkv + (b * s.l + i0) * stride + h * D, stride, queries, w, dq, add);
#endif
}

// ds: null (the dq kernel), or dS's buffer (attention_flash_bf16_ds_elements) for dq_by_gemm.
template <int D, class A>
void launch_backward(const AttentionShape& s, const A* qkv, const float* lse,
                     const float* delta, const A* dout, A* dqkv, GradWrite dqkv_write,
                     uint16_t* ds) {
  constexpr size_t bytes = Smem<D, A>::kBytes;
  const std::string what = "bf16 flash attention backward: head dim " + std::to_string(D);
  reserve_shared_memory(flash_dkv_bf16<D, A>, bytes, what, flash::kInstead);
  if (!ds) reserve_shared_memory(flash_dq_bf16<D, A>, bytes, what, flash::kInstead);
  constexpr int kRows = Tiles<D>::kRows, kThreads = Tiles<D>::kThreads;
  const dim3 grid(static_cast<unsigned>((s.l + kRows - 1) / kRows),
                  static_cast<unsigned>(s.b * s.heads));
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const bool add = dqkv_write == GradWrite::Accumulate;
  const int64_t ds_ld = ds_row_length(s.l);
  DDPM_LAUNCH((flash_dkv_bf16<D, A>), grid, kThreads, bytes)(s, scale, qkv, lse, delta, dout,
                                                                  dqkv, add, ds, ds_ld);
  if constexpr (sizeof(A) == 2) {
    if (ds) return dq_by_gemm(s, qkv, ds, ds_ld, dqkv, add);
  }
  DDPM_LAUNCH((flash_dq_bf16<D, A>), grid, kThreads, bytes)(s, scale, qkv, lse, delta, dout,
                                                                 dqkv, add);
}

template <class A>
void flash_backward(const AttentionShape& s, const A* qkv, const A* out, const float* lse,
                    const A* dout, A* dqkv, float* delta, GradWrite dqkv_write,
                    uint16_t* ds = nullptr) {
  CHECK(attention_flash_bf16_supports(s),
        "bf16 flash attention backward: head dim " << s.head_dim() << " (C " << s.c << ", "
                                                   << s.heads
                                                   << " heads) is not 32, 64, 128 or 256");
  CHECK(reinterpret_cast<uintptr_t>(qkv) % (2 * sizeof(A)) == 0 &&
            reinterpret_cast<uintptr_t>(dout) % (2 * sizeof(A)) == 0,
        "bf16 flash attention backward: qkv and dout must be "
            << 4 * sizeof(A) << "-byte aligned (4-element loads)");
  CHECK(reinterpret_cast<uintptr_t>(ds) % 16 == 0,
        "bf16 flash attention backward: the dS buffer must be 16-byte aligned");
  CHECK(s.b * s.heads <= 65535, "bf16 flash attention backward: batch x heads = "
                                    << s.b * s.heads << " exceeds the grid's 65535");
  CHECK(compute_capability() >= 80,
        "bf16 flash attention needs sm_80 or later, this device is sm_" << compute_capability());
  if (s.b * s.l == 0) return;
  attention_delta(s, out, dout, delta);
  switch (s.head_dim()) {
    case 32: return launch_backward<32>(s, qkv, lse, delta, dout, dqkv, dqkv_write, ds);
    case 64: return launch_backward<64>(s, qkv, lse, delta, dout, dqkv, dqkv_write, ds);
    case 128: return launch_backward<128>(s, qkv, lse, delta, dout, dqkv, dqkv_write, ds);
    default: return launch_backward<256>(s, qkv, lse, delta, dout, dqkv, dqkv_write, ds);
  }
}

}  // namespace

void attention_flash_bf16_backward(const AttentionShape& s, const float* qkv, const float* out,
                                   const float* lse, const float* dout, float* dqkv,
                                   float* delta, GradWrite dqkv_write) {
  flash_backward(s, qkv, out, lse, dout, dqkv, delta, dqkv_write);
}
void attention_flash_bf16_backward(const AttentionShape& s, const uint16_t* qkv,
                                   const uint16_t* out, const float* lse, const uint16_t* dout,
                                   uint16_t* dqkv, float* delta, GradWrite dqkv_write,
                                   uint16_t* ds) {
  flash_backward(s, qkv, out, lse, dout, dqkv, delta, dqkv_write, ds);
}

bool attention_flash_bf16_dq_by_gemm_pays(const AttentionShape& s) {
  return attention_flash_bf16_supports(s) && s.l <= 6 * s.head_dim();
}

int64_t attention_flash_bf16_ds_elements(const AttentionShape& s) {
  return s.b * s.heads * s.l * ds_row_length(s.l);
}

}  // namespace ddpm::cuda
