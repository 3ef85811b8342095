// Self-attention backward on bf16 tensor cores: FlashAttention-2's backward on mma.sync, the
// tensor-core counterpart of attention_fused.cu's dq / dkv kernels (read them side by side).
// Same contract: accumulates into dqkv (B, L, 3C) from qkv, out, lse and dout (f32), or
// writes it outright (GradWrite::Assign).
//
// With delta_i = dout_i . out_i (attention_delta, fp32), for query row i and key j:
//   P_ij = exp(q_i.k_j * scale - lse_i)   dP_ij = dout_i . v_j   dS_ij = P_ij (dP_ij - delta_i) * scale
//   dq_i += sum_j dS_ij k_j     (dq kernel: a block per 32 queries, looping over key tiles)
//   dk_j += sum_i dS_ij q_i     (dkv kernel: a block per 32 keys, looping over query tiles)
//   dv_j += sum_i P_ij dout_i
// Every output row is owned by one block and summed in a fixed order: no atomics, the same
// bits every run. P and dS are computed twice (once per kernel), on chip.
//
// On tensor cores (mma.m16n8k16, bf16 operands, fp32 accumulation): q, k, v and dout are
// rounded to bf16 as they are staged into shared memory (flash_bf16.cuh); P and dS are
// rounded where they become the A operand of the next product. S, dP, the softmax
// statistics and every accumulator stay fp32.
//
// Warps: 4 per block, a 2 x 2 grid. Warps 2r and 2r+1 own the block's rows 16r..16r+15
// (keys in dkv, queries in dq) and split the head's channels in halves: each accumulates its
// half of the rows' gradients (at d = 256, dk and dv are 2 x 64 floats per thread; a warp
// holding all 256 channels of both would need 256 and spill). The scores of a row pair need
// all channels, so each warp computes S and dP over its half and the two halves are added
// through shared memory (pair_sum: a + b == b + a exactly, so both warps hold the same bits).
//
// Per step (32 columns: queries in dkv, keys in dq), warp (r, half):
//   S, dP  (16 x 32)   partial over the warp's channels, then pair_sum
//   P, dS  from S, dP and the columns' (dkv) or rows' (dq) lse and delta
//   dkv:   dv += P^T-rows x dout[cols, half]     dk += dS^T-rows x q[cols, half]
//   dq:    dq += dS x k[cols, half]
// In dkv the warp's rows are keys, so what it computes is S^T = K Q^T and dP^T = V dout^T:
// the same code with the roles of the tiles swapped. The A operand of the second product
// comes straight from the accumulators of the first (attention_flash_bf16.cu, step 3); its B
// operand (rows = the 32 columns, channels along the row) is read with ldmatrix.trans.
//
// Launch constants: 32 rows x 32 columns per step keep each warp's S and dP at 16 floats;
// shared memory: four 32-row bf16 tiles of d + 8 and 16 KB of exchange: 34 KB at d = 64,
// 84 KB at d = 256.
//
// On bf16 activations (A = bf16 bits) the rows need no conversion: the per-step tiles are
// copied by cp.async into two stages, step i + 1 in flight while step i is multiplied, one
// barrier per step besides pair_sum's (six tiles: 45 KB at d = 64, 118 KB at d = 256).
#include <cmath>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/flash_bf16.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

using flash::kPad;
using flash::stage_rows;

constexpr int kWarps = 4;
constexpr int kRows = 32;  // rows a block owns
constexpr int kCols = 32;  // columns per step
constexpr int kExchange = kWarps * 16 * kCols;  // floats of one exchange area

// A: the storage of qkv and dout. bf16 rows are copied by cp.async, so the per-step tiles
// (and the dkv kernel's column statistics) get two stages: step i + 1 in flight while step
// i is multiplied. fp32 rows are converted through registers, one stage.
template <class A>
constexpr int kStepStages = sizeof(A) == 2 ? 2 : 1;

template <int D, class A>
constexpr size_t backward_smem_bytes() {
  return (2 + 2 * kStepStages<A>) * size_t(kRows) * (D + kPad) * sizeof(uint16_t) +
         2 * kExchange * sizeof(float) + 2 * kStepStages<A> * kCols * sizeof(float);
}

// acc (16 rows x 32 columns) = the sum over channels [c0, c0 + D/2) of a[row0 + r][c] b[col][c]:
// a and b are shared bf16 tiles, rows along the first index.
template <int D>
__device__ void partial_scores(const uint16_t* a, int row0, const uint16_t* b, int c0, int lane,
                               float (&acc)[4][4]) {
  constexpr int kLd = D + kPad;
  const int q8 = lane / 8, i8 = lane % 8;
  for (int n = 0; n < 4; ++n)
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
  for (int kk = c0; kk < c0 + D / 2; kk += 16) {
    uint32_t af[4];
    ptx::ldmatrix_x4(af, a + (row0 + lane % 16) * kLd + kk + 8 * (lane / 16));
    for (int n = 0; n < 4; n += 2) {
      uint32_t r[4];  // matrix q8: columns 8n + 8 (q8 >> 1), channels kk + 8 (q8 & 1)
      ptx::ldmatrix_x4(r, b + (8 * n + 8 * (q8 >> 1) + i8) * kLd + kk + 8 * (q8 & 1));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_bf16_16816(acc[n], af, b0);
      ptx::mma_bf16_16816(acc[n + 1], af, b1);
    }
  }
}

// Adds the partner warp's partials (the other channel half of the same rows) to s and p.
// Stored [element][lane] so a warp's 32 stores of one element hit 32 banks.
__device__ void pair_sum(float (&s)[4][4], float (&p)[4][4], float* exchange, int warp,
                         int lane) {
  float* const mine_s = exchange + warp * 16 * kCols;
  float* const mine_p = mine_s + kExchange;
  for (int n = 0; n < 4; ++n)
    for (int e = 0; e < 4; ++e) {
      mine_s[(4 * n + e) * 32 + lane] = s[n][e];
      mine_p[(4 * n + e) * 32 + lane] = p[n][e];
    }
  __syncthreads();
  const float* const other_s = exchange + (warp ^ 1) * 16 * kCols;
  const float* const other_p = other_s + kExchange;
  for (int n = 0; n < 4; ++n)
    for (int e = 0; e < 4; ++e) {
      s[n][e] += other_s[(4 * n + e) * 32 + lane];
      p[n][e] += other_p[(4 * n + e) * 32 + lane];
    }
}

// acc (16 rows x D/2 channels from c0) += x (16 rows x 32 columns, in accumulator layout,
// rounded to bf16 here) times b[col][c0 + ...] (b's rows are the 32 columns).
template <int D>
__device__ void accumulate_product(const float (&x)[4][4], const uint16_t* b, int c0, int lane,
                                   float (&acc)[D / 16][4]) {
  constexpr int kLd = D + kPad;
  const int q8 = lane / 8, i8 = lane % 8;
  for (int c = 0; c < 2; ++c) {  // 16-column chunks: n-tiles 2c, 2c + 1 of x
    const uint32_t a[4] = {bf16_pair(x[2 * c][0], x[2 * c][1]),
                           bf16_pair(x[2 * c][2], x[2 * c][3]),
                           bf16_pair(x[2 * c + 1][0], x[2 * c + 1][1]),
                           bf16_pair(x[2 * c + 1][2], x[2 * c + 1][3])};
    for (int dn = 0; dn < D / 16; dn += 2) {
      uint32_t r[4];  // matrix q8: columns 16c + 8 (q8 & 1), channels c0 + 8 dn + 8 (q8 >> 1)
      ptx::ldmatrix_x4_trans(r, b + (16 * c + 8 * (q8 & 1) + i8) * kLd + c0 + 8 * dn +
                                    8 * (q8 >> 1));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_bf16_16816(acc[dn], a, b0);
      ptx::mma_bf16_16816(acc[dn + 1], a, b1);
    }
  }
}

// dst[row][c0 + channel] += acc (= acc when not add) for the warp's 16 rows (row i of the
// block at dst + i * stride; rows at or past `rows` are not written). A: fp32 or bf16 bits
// (storage.cuh: the add in fp32, a bf16 element rounded once).
template <int D, class A>
__device__ void store_rows(A* dst, int64_t stride, int row0, int rows, int c0, int lane,
                           const float (&acc)[D / 16][4], bool add) {
  const int g = lane / 4, t = lane % 4;
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    if (row >= rows) continue;
    A* const d = dst + row * stride + c0 + 2 * t;
    for (int dn = 0; dn < D / 16; ++dn) {
      store_grad(d, 8 * dn, acc[dn][2 * r], add);
      store_grad(d, 8 * dn + 1, acc[dn][2 * r + 1], add);
    }
  }
}

struct Smem {
  uint16_t *own_a, *own_b, *step_a[2], *step_b[2];  // [kRows][D + kPad] each; per stage
  float *exchange, *col_lse[2], *col_delta[2];     // per stage: [kCols]; lse log2 e
};

template <int D, class A>
__device__ Smem carve(uint16_t* base) {
  constexpr int kTile = kRows * (D + kPad), kStages = kStepStages<A>;
  Smem m;
  m.own_a = base;
  m.own_b = base + kTile;
  for (int st = 0; st < 2; ++st) {  // a second stage only when there is one
    const int at = st < kStages ? st : 0;
    m.step_a[st] = base + (2 + 2 * at) * kTile;
    m.step_b[st] = m.step_a[st] + kTile;
  }
  m.exchange = reinterpret_cast<float*>(base + (2 + 2 * kStages) * kTile);
  for (int st = 0; st < 2; ++st) {
    const int at = st < kStages ? st : 0;
    m.col_lse[st] = m.exchange + 2 * kExchange + 2 * at * kCols;
    m.col_delta[st] = m.col_lse[st] + kCols;
  }
  return m;
}

// The per-step tiles of both kernels: rows [c0, c0 + kCols) of a and b (row stride
// stride_a, stride_b) into stage st, asynchronously (committed, not waited for) for bf16.
template <int D, class A>
__device__ void stage_step(const Smem& m, int st, const A* a, int64_t stride_a, const A* b,
                           int64_t stride_b, int rows) {
  if constexpr (kStepStages<A> == 2) {
    flash::copy_rows<D>(m.step_a[st], kCols, a, stride_a, rows);
    flash::copy_rows<D>(m.step_b[st], kCols, b, stride_b, rows);
    ptx::cp_async_commit();
  } else {
    stage_rows<D>(m.step_a[st], kCols, a, stride_a, rows);
    stage_rows<D>(m.step_b[st], kCols, b, stride_b, rows);
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

// grid (ceil(L / 32), B * H): dk and dv of 32 keys. own: k, v; per step: q, dout of 32 queries.
// A: the storage of qkv, dout and dqkv (fp32, or bf16 bits for bf16 activations).
template <int D, class A>
__global__ void __launch_bounds__(32 * kWarps)
flash_dkv_bf16(AttentionShape s, float scale, const A* qkv, const float* lse,
               const float* delta, const A* dout, A* dqkv, bool add) {
#if DDPM_HAS_SM80_TENSOR_CORES
  DDPM_DYNAMIC_SHARED(uint16_t, smem);
  const Smem m = carve<D, A>(smem);
  const float scale_log2 = scale * flash::kLog2e;  // P = exp2(s scale_log2 - lse log2 e)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, t = lane % 4;
  const int row0 = 16 * (warp / 2), c0 = (warp % 2) * (D / 2);
  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kRows, stride = 3 * s.c;
  const A* const base = qkv + b * s.l * stride + h * D;
  const A* const dbase = dout + b * s.l * s.c + h * D;
  const int keys = static_cast<int>(s.l - j0 < kRows ? s.l - j0 : kRows);
  stage_rows<D>(m.own_a, kRows, base + j0 * stride + s.c, stride, keys);
  stage_rows<D>(m.own_b, kRows, base + j0 * stride + 2 * s.c, stride, keys);

  // step i: q and dout of queries [32 i, 32 i + 32), their lse and delta
  const auto issue = [&](int64_t step, int stage) {
    const int64_t i0 = step * kCols;
    const int queries = static_cast<int>(s.l - i0 < kCols ? s.l - i0 : kCols);
    stage_step<D>(m, stage, base + i0 * stride, stride, dbase + i0 * s.c, s.c, queries);
    if (threadIdx.x < kCols) {
      const bool valid = static_cast<int>(threadIdx.x) < queries;
      // lse in base 2 (flash_bf16.cuh, kLog2e): P = exp2(s scale log2 e - lse log2 e)
      m.col_lse[stage][threadIdx.x] =
          valid ? lse[bh * s.l + i0 + threadIdx.x] * flash::kLog2e : 0.0f;
      m.col_delta[stage][threadIdx.x] = valid ? delta[bh * s.l + i0 + threadIdx.x] : 0.0f;
    }
  };
  const int64_t steps = (s.l + kCols - 1) / kCols;
  if constexpr (kStepStages<A> == 2) issue(0, 0);  // step 0 in flight before the loop

  float dk[D / 16][4] = {}, dv[D / 16][4] = {};
  for (int64_t step = 0; step < steps; ++step) {
    const int stage = begin_step<A>(step, steps, issue);
    const uint16_t *const step_a = m.step_a[stage], *const step_b = m.step_b[stage];
    const float *const col_lse = m.col_lse[stage], *const col_delta = m.col_delta[stage];
    float st[4][4], dpt[4][4];  // S^T and dP^T: rows = keys, columns = queries
    partial_scores<D>(m.own_a, row0, step_a, c0, lane, st);
    partial_scores<D>(m.own_b, row0, step_b, c0, lane, dpt);
    pair_sum(st, dpt, m.exchange, warp, lane);
    // Queries past L need no mask: their q and dout rows are staged as zeros and their lse
    // and delta as 0, so P^T = 1 and dS^T = 0 there, and P^T dout and dS^T q add nothing.
    for (int n = 0; n < 4; ++n)
      for (int e = 0; e < 4; ++e) {
        const int q = 8 * n + 2 * t + (e & 1);
        const float p = exp2f(fmaf(st[n][e], scale_log2, -col_lse[q]));
        st[n][e] = p;                                         // P^T
        dpt[n][e] = p * (dpt[n][e] - col_delta[q]) * scale;  // dS^T
      }
    accumulate_product<D>(st, step_b, c0, lane, dv);   // dv += P^T dout
    accumulate_product<D>(dpt, step_a, c0, lane, dk);  // dk += dS^T q
  }
  A* const dk_rows = dqkv + (b * s.l + j0) * stride + s.c + h * D;
  store_rows<D>(dk_rows, stride, row0, keys, c0, lane, dk, add);
  store_rows<D>(dk_rows + s.c, stride, row0, keys, c0, lane, dv, add);
#endif
}

// grid (ceil(L / 32), B * H): dq of 32 queries. own: q, dout; per step: k, v of 32 keys.
template <int D, class A>
__global__ void __launch_bounds__(32 * kWarps)
flash_dq_bf16(AttentionShape s, float scale, const A* qkv, const float* lse,
              const float* delta, const A* dout, A* dqkv, bool add) {
#if DDPM_HAS_SM80_TENSOR_CORES
  DDPM_DYNAMIC_SHARED(uint16_t, smem);
  const Smem m = carve<D, A>(smem);
  const float scale_log2 = scale * flash::kLog2e;  // P = exp2(s scale_log2 - lse log2 e)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4;
  const int row0 = 16 * (warp / 2), c0 = (warp % 2) * (D / 2);
  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kRows, stride = 3 * s.c;
  const A* const base = qkv + b * s.l * stride + h * D;
  const int queries = static_cast<int>(s.l - i0 < kRows ? s.l - i0 : kRows);
  stage_rows<D>(m.own_a, kRows, base + i0 * stride, stride, queries);
  stage_rows<D>(m.own_b, kRows, dout + (b * s.l + i0) * s.c + h * D, s.c, queries);
  float row_lse[2], row_delta[2];  // of this lane's rows g and g + 8
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
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

  float dq[D / 16][4] = {};
  for (int64_t step = 0; step < steps; ++step) {
    const int stage = begin_step<A>(step, steps, issue);
    const uint16_t *const step_a = m.step_a[stage], *const step_b = m.step_b[stage];
    float sc[4][4], dp[4][4];  // rows = queries, columns = keys
    partial_scores<D>(m.own_a, row0, step_a, c0, lane, sc);
    partial_scores<D>(m.own_b, row0, step_b, c0, lane, dp);
    pair_sum(sc, dp, m.exchange, warp, lane);
    // Keys past L need no mask (unlike the forward's softmax, which normalises over them):
    // their k rows are staged as zeros, so whatever dS is there, dS k adds nothing.
    for (int n = 0; n < 4; ++n)
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float p = exp2f(fmaf(sc[n][e], scale_log2, -row_lse[r]));
        dp[n][e] = p * (dp[n][e] - row_delta[r]) * scale;  // dS
      }
    accumulate_product<D>(dp, step_a, c0, lane, dq);  // dq += dS k
  }
  store_rows<D>(dqkv + (b * s.l + i0) * stride + h * D, stride, row0, queries, c0, lane, dq, add);
#endif
}

template <int D, class A>
void launch_backward(const AttentionShape& s, const A* qkv, const float* lse,
                     const float* delta, const A* dout, A* dqkv, GradWrite dqkv_write) {
  constexpr size_t bytes = backward_smem_bytes<D, A>();
  if (bytes > 48 * 1024) {  // beyond the default: opt in (every sm_80+ device has >= 163 KB)
    CUDA_CHECK(cudaFuncSetAttribute(flash_dkv_bf16<D, A>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
    CUDA_CHECK(cudaFuncSetAttribute(flash_dq_bf16<D, A>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
  }
  const dim3 grid(static_cast<unsigned>((s.l + kRows - 1) / kRows),
                  static_cast<unsigned>(s.b * s.heads));
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const bool add = dqkv_write == GradWrite::Accumulate;
  DDPM_LAUNCH((flash_dkv_bf16<D, A>), grid, 32 * kWarps, bytes)(s, scale, qkv, lse, delta, dout,
                                                                  dqkv, add);
  DDPM_LAUNCH((flash_dq_bf16<D, A>), grid, 32 * kWarps, bytes)(s, scale, qkv, lse, delta, dout,
                                                                 dqkv, add);
}

template <class A>
void flash_backward(const AttentionShape& s, const A* qkv, const A* out, const float* lse,
                    const A* dout, A* dqkv, float* delta, GradWrite dqkv_write) {
  CHECK(attention_flash_bf16_supports(s),
        "bf16 flash attention backward: head dim " << s.head_dim() << " (C " << s.c << ", "
                                                   << s.heads
                                                   << " heads) is not 32, 64, 128 or 256");
  CHECK(reinterpret_cast<uintptr_t>(qkv) % (2 * sizeof(A)) == 0 &&
            reinterpret_cast<uintptr_t>(dout) % (2 * sizeof(A)) == 0,
        "bf16 flash attention backward: qkv and dout must be "
            << 4 * sizeof(A) << "-byte aligned (4-element loads)");
  CHECK(s.b * s.heads <= 65535, "bf16 flash attention backward: batch x heads = "
                                    << s.b * s.heads << " exceeds the grid's 65535");
  CHECK(compute_capability() >= 80,
        "bf16 flash attention needs sm_80 or later, this device is sm_" << compute_capability());
  if (s.b * s.l == 0) return;
  attention_delta(s, out, dout, delta);
  switch (s.head_dim()) {
    case 32: return launch_backward<32>(s, qkv, lse, delta, dout, dqkv, dqkv_write);
    case 64: return launch_backward<64>(s, qkv, lse, delta, dout, dqkv, dqkv_write);
    case 128: return launch_backward<128>(s, qkv, lse, delta, dout, dqkv, dqkv_write);
    default: return launch_backward<256>(s, qkv, lse, delta, dout, dqkv, dqkv_write);
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
                                   uint16_t* dqkv, float* delta, GradWrite dqkv_write) {
  flash_backward(s, qkv, out, lse, dout, dqkv, delta, dqkv_write);
}

}  // namespace ddpm::cuda
