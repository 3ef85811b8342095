// Self-attention backward on Hopper's warpgroup tensor cores (wgmma, sm_90a), on bf16
// activations: the mma.sync flash backward's dk/dv kernel with dq by GEMM
// (attention_flash_bf16_backward.cu: read them side by side) on the forward's wgmma pieces
// (attention_flash_wgmma.cu). Same contract and numbers: qkv, out, dout and dqkv bf16 bits,
// lse and delta fp32; dqkv written outright or added to (GradWrite).
//
// With delta_i = dout_i . out_i (attention_delta), for key j and query i:
//   P^T_ji = exp(k_j.q_i scale - lse_i)   dP^T_ji = v_j . dout_i
//   dS^T_ji = P^T_ji (dP^T_ji - delta_i) scale
//   dv_j += sum_i P^T_ji dout_i     dk_j += sum_i dS^T_ji q_i
//   dq = dS k                       (cuBLAS, from dS^T stored in bf16: the mma.sync
//                                    version's dq by GEMM, flash::dq_by_gemm)
// A block owns 64 keys and loops over the queries in tiles of 64. Its two warpgroups split
// the work by output, not by rows: wgmma's unit is 64 rows, the block's 64 keys, and the
// two accumulators of 64 keys x d (dv and dk) take d / 2 registers a thread each (128 at
// d = 256), which one warpgroup could not hold together.
//   warpgroup 0 (dv)   S^T = K Q^T, P^T, dv += P^T dout               2 products a tile
//   warpgroup 1 (dk)   S^T = K Q^T, P^T, dP^T = V dout^T, dS^T,
//                      dS^T to memory, dk += dS^T Q                   3 products a tile
// S^T is computed by both (one product in five more than the four the math needs), so that
// neither waits for the other and nothing but the tiles passes through shared memory.
// All products are wgmma.m64n64k16: S^T and dP^T from shared memory, K-major both (K's and
// V's rows, Q's and dout's rows: the head's channels, the reduction); dv and dk in the
// register form, A = P^T or dS^T straight from the accumulators of the product before
// (flash::p_fragment, as in the forward), B = the tile of dout or Q MN-major (its rows are
// the reduction's, queries, and hold the output's channels). A 64 x 64 box of the copy
// engine is both: K-major, the tile's 128-byte column; MN-major, a panel.
//
// Queries past L need no mask: the copy engine writes their q and dout rows as zeros and
// their lse and delta are staged as 0, so P^T = 1 and dS^T = 0 there, and P^T dout and
// dS^T q add nothing (the mma.sync kernel's argument). Keys past L: K and V rows of zeros,
// their dk, dv and dS^T rows not stored.
//
// Launch constants: 256 threads (2 warpgroups); 64 keys a block (one wgmma's rows), 64
// queries a tile (S^T and dP^T 32 floats a thread, and a tile of Q or dout one panel of
// the register form's k). Shared memory: the block's K and V (64 rows each), and in two
// stages a tile's Q and dout (64 rows each) and its lse (base 2) and delta: 256 d + 256 d
// bytes + 3 KB (alignment, the stages' statistics, barriers): 35 / 67 / 131 KB at d = 64 /
// 128 / 256 (WgmmaBackwardTiles). Head dims 64, 128, 256; C a multiple of 8.
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "engine/check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/flash_bf16.cuh"
#include "kernels/cuda/flash_wgmma.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/cuda/tensor_map.cuh"
#include "kernels/cuda/wgmma_tile.cuh"

namespace ddpm::cuda {

namespace {

constexpr int kThreads = 256;  // 2 warpgroups: dv, then dk
constexpr int kRows = 64;      // keys a block: one wgmma's rows
using flash::kBox;  // a copy's box: 64 rows of 64 channels (flash_wgmma.cuh); also the
                   // queries of a tile
using flash::kBoxBytes;
constexpr int kStages = 2;

// In bytes from the dynamic shared memory's first 1024-byte atom: K's D/64 columns of 64
// rows, then V's; then each stage: Q's columns, dout's, then its 64 lse (base 2) and 64
// delta; then the barriers, one a stage and one for K and V.
template <int D>
struct WgmmaBackwardTiles {
  static constexpr int kColumns = D / kBox;
  static constexpr int kOwnBytes = 2 * kColumns * kBoxBytes;       // K, V
  static constexpr int kTileBytes = 2 * kColumns * kBoxBytes;      // Q, dout: what a copy lands
  // and its lse and delta (512 bytes), in an atom of their own: the next stage's tiles
  // start on one
  static constexpr int kStageBytes = kTileBytes + ptx::Sw128::kAtomBytes;
  static constexpr int kBarriers = kOwnBytes + kStages * kStageBytes;
  static constexpr size_t kSmemBytes =
      kBarriers + (1 + kStages) * sizeof(uint64_t) + ptx::Sw128::kAtomBytes;
  static_assert(kStageBytes % ptx::Sw128::kAtomBytes == 0, "every stage's tiles on an atom");
};

// grid (ceil(L / 64), B * H), 256 threads, WgmmaBackwardTiles<D>::kSmemBytes. qkv_map and
// dout_map: qkv and dout as B planes of L rows (3C and C bf16), boxes of 64 x 64. ds: dS^T
// (B * H blocks of L keys x ds_ld, flash::ds_row_length).
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
flash_dkv_wgmma(AttentionShape s, float scale, const __grid_constant__ CUtensorMap qkv_map,
                const __grid_constant__ CUtensorMap dout_map, const float* lse,
                const float* delta, uint16_t* dqkv, bool add, uint16_t* ds, int64_t ds_ld) {
#if DDPM_HAS_SM90A_WGMMA
  using T = WgmmaBackwardTiles<D>;
  using KMajor = sm90::TileLayout<Major::K>;
  using MNMajor = sm90::TileLayout<Major::MN>;
  using ptx::Sw128;
  constexpr int kNT = kBox / 8;  // 8-query n-tiles of S^T and dP^T
  constexpr int kDT = D / 8;     // 8-channel n-tiles of dv or dk
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress k_s = sm90::first_stage(smem);
  const ptx::SharedAddress v_s = k_s + T::kColumns * kBoxBytes;
  const ptx::SharedAddress stages = k_s + T::kOwnBytes;
  const ptx::SharedAddress own_landed = k_s + T::kBarriers;  // then stage st's at + 8 (1 + st)
  unsigned char* const smem_at = smem + (k_s - ptx::shared_address(smem));  // k_s, generic
  const auto stats = [&](int tile) {  // the stage's lse (base 2), then its delta
    return reinterpret_cast<float*>(smem_at + T::kOwnBytes + (tile % kStages) * T::kStageBytes +
                                    T::kTileBytes);
  };

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = sm90::uniform_warpgroup(tid);
  const int warp = tid / 32 % 4, g = tid % 32 / 4, t = tid % 4;
  const int bh = static_cast<int>(blockIdx.y);
  const flash::Head head(s, D);
  const int b = head.b;
  const int j0 = static_cast<int>(blockIdx.x) * kRows;
  const int keys = static_cast<int>(s.l - j0 < kRows ? s.l - j0 : kRows);
  const int tiles = static_cast<int>((s.l + kBox - 1) / kBox);
  const auto stage_landed = [&](int tile) { return own_landed + 8 * (1 + tile % kStages); };

  // By thread 0: Q and dout of query tile `tile` into its stage (dout's head columns are
  // q's: out and dout are (B, L, C)).
  const auto request = [&](int tile) {
    const ptx::SharedAddress bar = stage_landed(tile);
    ptx::mbarrier_arrive_expect_tx(bar, T::kTileBytes);
    flash::request_row_tiles(stages + (tile % kStages) * T::kStageBytes, T::kColumns, &qkv_map,
                             head.q, &dout_map, head.q, kBox * tile, b, bar);
  };
  // By threads 0..63: the tile's lse (base 2: P = exp2(s scale log2 e - lse log2 e)) and
  // delta into its stage, 0 past L.
  const auto stage_stats = [&](int tile) {
    if (tid < kBox) {
      const int64_t i = int64_t{kBox} * tile + tid;
      stats(tile)[tid] = i < s.l ? lse[bh * s.l + i] * flash::kLog2e : 0.0f;
      stats(tile)[kBox + tid] = i < s.l ? delta[bh * s.l + i] : 0.0f;
    }
  };
  if (tid == 0) {
    for (int i = 0; i <= kStages; ++i) ptx::mbarrier_init(own_landed + 8 * i, 1);
    ptx::fence_mbarrier_init();
    ptx::mbarrier_arrive_expect_tx(own_landed, T::kOwnBytes);
    flash::request_row_tiles(k_s, T::kColumns, &qkv_map, head.k, &qkv_map, head.v, j0, b,
                             own_landed);  // K's columns, then V's (v_s)
    request(0);
  }
  stage_stats(0);
  __syncthreads();  // the barriers' init and tile 0's statistics, before anyone reads them

  // Descriptors at their tiles' starts, each wgmma's one add on (the forward's step 5).
  const uint64_t k_desc = KMajor::descriptor(k_s, 0, 0), v_desc = KMajor::descriptor(v_s, 0, 0);
  // A stage's Q and dout: K-major for S^T and dP^T; the B of dk or dv, MN-major (dk: Q;
  // dv: dout), the same boxes read as panels.
  // Stage 0's; stage 1's are kStageBytes on (Sw128::moved).
  const ptx::SharedAddress o_at = stages + T::kColumns * kBoxBytes;
  const uint64_t q_desc = KMajor::descriptor(stages, 0, 0), o_desc = KMajor::descriptor(o_at, 0, 0);
  const uint64_t b_desc = MNMajor::descriptor(warpgroup == 1 ? stages : o_at, 0, 0);
  const float scale_log2 = scale * flash::kLog2e;
  float acc[kDT][4] = {};  // dv (warpgroup 0) or dk (1): rows g, g + 8 of the warp's keys
  ptx::mbarrier_wait(own_landed, 0);

  // The loop over the query tiles, as the warpgroup's role has it (kDk: dk and dS^T; else
  // dv), each role's products straight-line: with the role tested between them, ptxas put
  // a warpgroup.arrive before every wgmma (C7519), waiting on each one's registers.
  const auto tiles_loop = [&](auto role) {
    constexpr bool kDk = decltype(role)::value;
    for (int tile = 0; tile < tiles; ++tile) {
      ptx::mbarrier_wait(stage_landed(tile), (tile / kStages) % 2);
      __syncthreads();  // both warpgroups are done with tile - 1: its stage takes tile + 1
      if (tile + 1 < tiles) {
        if (tid == 0) request(tile + 1);
        stage_stats(tile + 1);  // read after the next tile's barrier
      }
      const uint32_t stage_bytes = (tile % kStages) * T::kStageBytes;
      const uint64_t q_tile = Sw128::moved(q_desc, stage_bytes);
      const uint64_t o_tile = Sw128::moved(o_desc, stage_bytes);
      const float* const col_lse = stats(tile);
      const float* const col_delta = col_lse + kBox;

      // S^T = K Q^T (both warpgroups) and, for dk, dP^T = V dout^T: one group.
      float st[kNT][4] = {}, dpt[kNT][4] = {};
      float(&st_flat)[4 * kNT] = reinterpret_cast<float(&)[4 * kNT]>(st);
      float(&dpt_flat)[4 * kNT] = reinterpret_cast<float(&)[4 * kNT]>(dpt);
      ptx::wgmma_fence_operands(st_flat);
      ptx::wgmma_fence_operands(dpt_flat);
      ptx::wgmma_fence();
#pragma unroll
      for (int c = 0; c < T::kColumns; ++c)
#pragma unroll
        for (int step = 0; step < 4; ++step) {  // 16 channels: 32 bytes of a row
          const uint32_t at = c * kBoxBytes + 32 * step;
          ptx::wgmma_m64n64k16_bf16<Major::K, Major::K>(st_flat, Sw128::moved(k_desc, at),
                                                        Sw128::moved(q_tile, at),
                                                        c > 0 || step > 0);
          if constexpr (kDk)
            ptx::wgmma_m64n64k16_bf16<Major::K, Major::K>(dpt_flat, Sw128::moved(v_desc, at),
                                                          Sw128::moved(o_tile, at),
                                                          c > 0 || step > 0);
        }
      ptx::wgmma_commit_group();
      ptx::wgmma_wait_group<0>();
      ptx::wgmma_fence_operands(st_flat);
      ptx::wgmma_fence_operands(dpt_flat);

      // P^T, and for dk dS^T = P^T (dP^T - delta) scale, in place; columns are queries.
#pragma unroll
      for (int n = 0; n < kNT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = 8 * n + 2 * t + (e & 1);
          const float p = exp2f(fmaf(st[n][e], scale_log2, -col_lse[i]));
          st[n][e] = p;
          if constexpr (kDk) dpt[n][e] = p * (dpt[n][e] - col_delta[i]) * scale;
        }
      // The A operand of the second product, 16 queries a fragment: P^T (dv) or dS^T (dk).
      uint32_t a[kNT / 2][4];
#pragma unroll
      for (int kc = 0; kc < kNT / 2; ++kc) {
        if constexpr (kDk) flash::p_fragment(dpt, kc, a[kc]);
        else flash::p_fragment(st, kc, a[kc]);
      }
      // dS^T to memory for the dq GEMM: ds[key][query], the fragment's pairs of queries.
      if constexpr (kDk) {
        uint16_t* const rows = ds + (int64_t{bh} * s.l + j0) * ds_ld;
#pragma unroll
        for (int kc = 0; kc < kNT / 2; ++kc)
#pragma unroll
          for (int e = 0; e < 4; ++e) {  // words: (g, 2t), (g + 8, 2t), (g, 8 + 2t), (g + 8, ...)
            const int key = 16 * warp + g + 8 * (e & 1);
            const int64_t query = int64_t{kBox} * tile + 16 * kc + 8 * (e >> 1) + 2 * t;
            if (key < keys && query < s.l)
              *reinterpret_cast<uint32_t*>(rows + key * ds_ld + query) = a[kc][e];
          }
      }
      // dv += P^T dout or dk += dS^T Q (B: the tile of dout or Q, MN-major), waited for
      // before the stage is reused.
      flash::accumulate_panels<T::kColumns>(acc, a, Sw128::moved(b_desc, stage_bytes));
    }
  };
  if (warpgroup == 1) tiles_loop(std::true_type{});
  else tiles_loop(std::false_type{});

  // dk (warpgroup 1) or dv (0) of the warp's keys, rows g and g + 8, into dqkv.
  const int64_t stride = 3 * s.c;
  uint16_t* const rows =
      dqkv + (int64_t{b} * s.l + j0) * stride + (warpgroup == 1 ? head.k : head.v);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = 16 * warp + g + 8 * r;
    if (key >= keys) continue;
    uint16_t* const dst = rows + key * stride + 2 * t;
#pragma unroll
    for (int dn = 0; dn < kDT; ++dn) {
      store_grad(dst, 8 * dn, acc[dn][2 * r], add);
      store_grad(dst, 8 * dn + 1, acc[dn][2 * r + 1], add);
    }
  }
#else
  (void)s, (void)scale, (void)qkv_map, (void)dout_map, (void)lse, (void)delta, (void)dqkv,
      (void)add, (void)ds, (void)ds_ld;
#endif
}

template <int D>
void launch_dkv_wgmma(const AttentionShape& s, const uint16_t* qkv, const float* lse,
                      const float* delta, const uint16_t* dout, uint16_t* dqkv, bool add,
                      uint16_t* ds, int64_t ds_ld) {
  using T = WgmmaBackwardTiles<D>;
  reserve_shared_memory(flash_dkv_wgmma<D>, T::kSmemBytes,
                        "flash attention backward on wgmma: head dim " + std::to_string(D),
                        "no Hopper GPU has less");
  const CUtensorMap qkv_map = bf16_planes_tensor_map_sw128(
      qkv, s.b, s.l, 3 * s.c, kBox, "flash attention backward on wgmma, qkv");
  const CUtensorMap dout_map = bf16_planes_tensor_map_sw128(
      dout, s.b, s.l, s.c, kBox, "flash attention backward on wgmma, dout");
  const dim3 grid(static_cast<unsigned>((s.l + kRows - 1) / kRows),
                  static_cast<unsigned>(s.b * s.heads));
  DDPM_LAUNCH((flash_dkv_wgmma<D>), grid, kThreads, T::kSmemBytes)(
      s, 1.0f / sqrtf(static_cast<float>(D)), qkv_map, dout_map, lse, delta, dqkv, add, ds,
      ds_ld);
}

}  // namespace

void attention_flash_wgmma_backward(const AttentionShape& s, const uint16_t* qkv,
                                    const uint16_t* out, const float* lse, const uint16_t* dout,
                                    uint16_t* dqkv, float* delta, uint16_t* ds,
                                    GradWrite dqkv_write) {
  CHECK(attention_flash_wgmma_supports(s),
        "flash attention backward on wgmma: head dim " << s.head_dim() << " (C " << s.c << ", "
                                                       << s.heads
                                                       << " heads): needs 64, 128 or 256, and "
                                                          "C a multiple of 8");
  CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 &&
            reinterpret_cast<uintptr_t>(dout) % 16 == 0 && ds &&
            reinterpret_cast<uintptr_t>(ds) % 16 == 0,
        "flash attention backward on wgmma: qkv, dout and the dS buffer must be 16-byte "
        "aligned (the copy engine's rows, cuBLAS's loads), and dS given");
  CHECK(s.b * s.heads <= 65535, "flash attention backward on wgmma: batch x heads = "
                                    << s.b * s.heads << " exceeds the grid's 65535");
  CHECK(s.l < (int64_t{1} << 31) && 3 * s.c < (int64_t{1} << 31),
        "flash attention backward on wgmma: L and 3C under 2^31 (32-bit box coordinates)");
  CHECK(gemm_sm90_available(), "flash attention backward on wgmma " << sm90a_missing());
  if (s.b * s.l == 0) return;
  attention_delta(s, out, dout, delta);
  const bool add = dqkv_write == GradWrite::Accumulate;
  const int64_t ds_ld = flash::ds_row_length(s.l);
  switch (s.head_dim()) {
    case 64: launch_dkv_wgmma<64>(s, qkv, lse, delta, dout, dqkv, add, ds, ds_ld); break;
    case 128: launch_dkv_wgmma<128>(s, qkv, lse, delta, dout, dqkv, add, ds, ds_ld); break;
    default: launch_dkv_wgmma<256>(s, qkv, lse, delta, dout, dqkv, add, ds, ds_ld); break;
  }
  flash::dq_by_gemm(s, qkv, ds, ds_ld, dqkv, add);
}

}  // namespace ddpm::cuda
