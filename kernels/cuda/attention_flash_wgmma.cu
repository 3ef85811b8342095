// Self-attention forward on Hopper's warpgroup tensor cores (wgmma, sm_90a): the fourth
// version of the forward, after the straightforward one (attention.cu), the fused fp32 one
// (attention_fused.cu) and FlashAttention-2's on mma.sync (attention_flash_bf16.cu), whose
// algorithm it keeps: online softmax, S and P in registers, the L x L matrix never in DRAM.
// Same contract on bf16 activations: qkv (B, L, 3C) and out (B, L, C) bf16 bits, lse
// (B, H, L) fp32. Read it beside the mma.sync version; what changes, and why:
//  1. The products are wgmma: a warpgroup (4 warps) multiplies its 64 query rows at once,
//     reading the operands from shared memory itself, where mma.sync's warps each loaded
//     their fragments with ldmatrix (on an H100, mma.sync reaches about 60% of the rate
//     wgmma does; FlashAttention-3's reason for the same move).
//       S = Q K^T   wgmma.m64n64k16, both operands in shared memory, K-major (the rows of
//                   Q and of K hold the head's channels, the reduction dimension):
//                   D / 16 instructions a tile of 64 keys.
//       O += P V    wgmma.m64n64k16 in its register form: A = P straight from S's
//                   accumulators (their layout along n is the A fragment's along k, as in
//                   the mma.sync version: flash::p_fragment), B = V from shared memory
//                   MN-major (a row of V holds channels, the product's n: the instruction's
//                   transpose bit reads it as it lies), D / 64 x 4 instructions a tile.
//     The accumulators keep mma.sync's m16n8 layout a warp (ptx_sm90.cuh), so the online
//     softmax and the output are the same code (flash_bf16.cuh: softmax_tile,
//     store_output).
//  2. The tiles come by the copy engine (TMA): one thread asks for a 64 x 64 box of the
//     packed qkv (a rank-3 map, B x L x 3C, so keys past L read as zeros) per 128-byte
//     column of a tile, in the 128-byte swizzle wgmma reads, counted on an mbarrier. No
//     thread computes an address or converts anything.
//  3. A block is 2 warpgroups, 128 query rows, sharing each K/V tile (half the L2 traffic
//     of 64-row blocks); K and V come in two stages, the next tile in flight while this one
//     is multiplied, one block barrier a tile (as the mma.sync version on bf16 rows).
//
// Per key tile (64 keys), warpgroup w (query rows 64w..64w+63 of the block), each warp
// its 16 of them:
//   S = Q K^T               (D/16 wgmma, one group, waited for)
//   softmax_tile            (mask keys >= L, running max, conditional rescale of O, P)
//   O += bf16(P) V          (4 D/64 wgmma, one group, waited for before the next tile)
// and at the end out = O / l, lse = m + log l.
// Not yet FlashAttention-3's further steps: a producer warpgroup, and the softmax of one
// warpgroup overlapping the other's products by named barriers (here the two warpgroups
// overlap only as the scheduler interleaves them, and each waits for its own products).
//
// Launch constants: 256 threads (2 consumer warpgroups; wgmma's unit is 128 threads);
// 64 keys a tile (S is 32 floats a thread, and a tile of V is one 64-row panel of k, the
// MN-major layout's unit); O is D/2 floats a thread (128 at D = 256). Shared memory: Q
// 128 rows, K and V 64 rows each in 2 stages, all D wide: 256 D + 256 D bytes (+ 1 KB to
// align the swizzle's atoms, + 24 B of barriers): 49 / 97 / 193 KB at D = 64 / 128 / 256.
// Head dims 64, 128, 256 (a multiple of 64: whole 128-byte columns); C a multiple of 8
// (rows 16-byte aligned for the copy engine); compiled, like every wgmma kernel, only for
// sm_90a (ptx_sm90.cuh).
#include <cstdint>
#include <string>

#include "engine/check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/flash_bf16.cuh"
#include "kernels/cuda/flash_wgmma.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/cuda/tensor_map.cuh"
#include "kernels/cuda/wgmma_tile.cuh"

namespace ddpm::cuda {

namespace {

constexpr int kThreads = 256;  // 2 warpgroups
constexpr int kRows = 128;     // query rows a block: 64 a warpgroup
using flash::kBox;  // a copy's box: 64 rows of 64 channels (flash_wgmma.cuh)
using flash::kBoxBytes;
constexpr int kStages = 2;

// Where a block's tiles are, in bytes from the dynamic shared memory's first 1024-byte atom.
// Q: column c (channels 64c..64c+63) of its 128 rows at c kQColumnBytes, K-major (row r's
// 128 bytes at 128 r, swizzled). A stage: K's D/64 columns of 64 rows, K-major, then V's
// D/64 panels of 64 rows of k (keys) by 64 channels: the MN-major layout's panels
// (wgmma_tile.cuh's TileLayout<Major::MN>: 8 KB apart). Then the mbarriers: Q's, then one a
// stage.
template <int D>
struct WgmmaFlashTiles {
  static constexpr int kColumns = D / kBox;                    // 128-byte columns of a row
  static constexpr int kQColumnBytes = 2 * kBoxBytes;          // 128 rows
  static constexpr int kQBytes = kColumns * kQColumnBytes;
  static constexpr int kStageBytes = 2 * kColumns * kBoxBytes;  // K, then V
  static constexpr int kBarriers = kQBytes + kStages * kStageBytes;
  static constexpr size_t kSmemBytes =
      kBarriers + (1 + kStages) * sizeof(uint64_t) + ptx::Sw128::kAtomBytes;
  // Blocks an SM holds by shared memory (228 KB, 1 KB a block the system's), at most 2
  // (256 threads of up to 128 registers each): the launch bounds' minimum.
  static constexpr int kMinBlocks = (228 * 1024) / (kSmemBytes + 1024) >= 2 ? 2 : 1;
  static_assert(D % kBox == 0, "whole 128-byte columns");
};

// grid (ceil(L / 128), B * H), 256 threads, WgmmaFlashTiles<D>::kSmemBytes of shared memory.
// map: qkv as B planes of L rows of 3C bf16, boxes of 64 x 64 (bf16_planes_tensor_map_sw128).
template <int D>
__global__ void __launch_bounds__(kThreads, WgmmaFlashTiles<D>::kMinBlocks)
flash_forward_wgmma(AttentionShape s, float scale, const __grid_constant__ CUtensorMap map,
                    uint16_t* out, float* lse) {
#if DDPM_HAS_SM90A_WGMMA
  using T = WgmmaFlashTiles<D>;
  using KMajor = sm90::TileLayout<Major::K>;
  using MNMajor = sm90::TileLayout<Major::MN>;
  constexpr int kBc = kBox;     // keys a tile: one box of K's rows, one panel of V's k
  constexpr int kNT = kBc / 8;  // 8-key n-tiles of S
  constexpr int kDT = D / 8;    // 8-channel n-tiles of O
  DDPM_DYNAMIC_SHARED(unsigned char, smem);
  const ptx::SharedAddress q_s = sm90::first_stage(smem);
  const ptx::SharedAddress kv_s = q_s + T::kQBytes;
  const ptx::SharedAddress q_landed = q_s + T::kBarriers;  // then stage st's at + 8 (1 + st)

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = sm90::uniform_warpgroup(tid);  // Q's descriptor in uniform registers
  const int warp = tid / 32 % 4, g = tid % 32 / 4, t = tid % 4;
  const flash::Head head(s, D);
  const int b = head.b, h = head.h;
  const int i0 = static_cast<int>(blockIdx.x) * kRows;
  const int tiles = static_cast<int>((s.l + kBc - 1) / kBc);
  const auto stage_landed = [&](int tile) { return q_landed + 8 * (1 + tile % kStages); };

  // By thread 0: K and V of `tile` into its stage, every byte counted on its barrier.
  const auto request_kv = [&](int tile) {
    const ptx::SharedAddress bar = stage_landed(tile);
    ptx::mbarrier_arrive_expect_tx(bar, T::kStageBytes);
    flash::request_row_tiles(kv_s + (tile % kStages) * T::kStageBytes, T::kColumns, &map,
                             head.k, &map, head.v, kBc * tile, b, bar);
  };
  if (tid == 0) {
    for (int i = 0; i <= kStages; ++i) ptx::mbarrier_init(q_landed + 8 * i, 1);
    ptx::fence_mbarrier_init();
    ptx::mbarrier_arrive_expect_tx(q_landed, T::kQBytes);
    for (int c = 0; c < T::kColumns; ++c)
      for (int half = 0; half < 2; ++half)
        ptx::tma_load_3d(q_s + c * T::kQColumnBytes + half * kBoxBytes, &map,
                         head.q + kBox * c, i0 + kBox * half, b, q_landed);
    request_kv(0);
  }
  __syncthreads();  // the barriers' init, before anyone waits on them

  float o[kDT][4] = {};                 // O rows g, g+8 of this warp: [n-tile][d0..d3]
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g, g+8 (of q.k, unscaled)
  float l[2] = {0.0f, 0.0f};            // running sum (this lane's columns only)
  const float scale_log2 = scale * flash::kLog2e;
  // The operands' descriptors at their tiles' starts, each wgmma's one add on (Sw128::moved):
  // the warpgroup's rows of Q, and each stage's K and V.
  using ptx::Sw128;
  const uint64_t q_desc = KMajor::descriptor(q_s, 64 * warpgroup, 0);
  uint64_t k_desc[kStages], v_desc[kStages];
  for (int st = 0; st < kStages; ++st) {
    k_desc[st] = KMajor::descriptor(kv_s + st * T::kStageBytes, 0, 0);
    v_desc[st] = MNMajor::descriptor(kv_s + st * T::kStageBytes + T::kColumns * kBoxBytes, 0, 0);
  }
  ptx::mbarrier_wait(q_landed, 0);

  for (int tile = 0; tile < tiles; ++tile) {
    ptx::mbarrier_wait(stage_landed(tile), (tile / kStages) % 2);
    __syncthreads();  // both warpgroups are done with tile - 1: its stage takes tile + 1
    if (tid == 0 && tile + 1 < tiles) request_kv(tile + 1);
    const uint64_t k_tile = k_desc[tile % kStages], v_tile = v_desc[tile % kStages];
    const int keys = static_cast<int>(s.l - int64_t{kBc} * tile < kBc ? s.l - kBc * tile : kBc);

    // S = Q K^T: the warpgroup's 64 rows of Q by the tile's 64 keys, 16 channels a wgmma.
    float sc[kNT][4] = {};
    float(&s_acc)[4 * kNT] = reinterpret_cast<float(&)[4 * kNT]>(sc);
    ptx::wgmma_fence_operands(s_acc);
    ptx::wgmma_fence();
#pragma unroll
    for (int c = 0; c < T::kColumns; ++c)
#pragma unroll
      for (int step = 0; step < 4; ++step)
        ptx::wgmma_m64n64k16_bf16<Major::K, Major::K>(  // 16 channels: 32 bytes of a row
            s_acc, Sw128::moved(q_desc, c * T::kQColumnBytes + 32 * step),
            Sw128::moved(k_tile, c * kBoxBytes + 32 * step), c > 0 || step > 0);
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<0>();
    ptx::wgmma_fence_operands(s_acc);

    flash::softmax_tile(sc, keys, t, scale_log2, m, l, o);

    // O += P V: P's four 16-key chunks as A fragments, V's panel p (channels 64p..) as B;
    // waited for before O is rescaled, and before the stage is reused.
    uint32_t p[kNT / 2][4];
#pragma unroll
    for (int kc = 0; kc < kNT / 2; ++kc) flash::p_fragment(sc, kc, p[kc]);
    flash::accumulate_panels<T::kColumns>(o, p, v_tile);
  }

  flash::store_output(s, o, l, m, scale, i0 + 64 * warpgroup + 16 * warp + g, b, h, t, out,
                      lse);
#else
  (void)s, (void)scale, (void)map, (void)out, (void)lse;
#endif
}

template <int D>
void launch_flash_wgmma(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                        float* lse) {
  using T = WgmmaFlashTiles<D>;
  reserve_shared_memory(flash_forward_wgmma<D>, T::kSmemBytes,
                        "flash attention forward on wgmma: head dim " + std::to_string(D),
                        "no Hopper GPU has less");
  const CUtensorMap map = bf16_planes_tensor_map_sw128(qkv, s.b, s.l, 3 * s.c, kBox,
                                                       "flash attention forward on wgmma, qkv");
  const dim3 grid(static_cast<unsigned>((s.l + kRows - 1) / kRows),
                  static_cast<unsigned>(s.b * s.heads));
  DDPM_LAUNCH((flash_forward_wgmma<D>), grid, kThreads, T::kSmemBytes)(
      s, 1.0f / sqrtf(static_cast<float>(D)), map, out, lse);
}

}  // namespace

bool attention_flash_wgmma_supports(const AttentionShape& s) {
  if (s.heads <= 0 || s.c % s.heads != 0 || s.c % 8 != 0) return false;
  const int64_t d = s.head_dim();
  return d == 64 || d == 128 || d == 256;
}

void attention_flash_wgmma_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                                   float* lse) {
  CHECK(attention_flash_wgmma_supports(s),
        "flash attention forward on wgmma: head dim " << s.head_dim() << " (C " << s.c << ", "
                                                      << s.heads
                                                      << " heads): needs 64, 128 or 256, and "
                                                         "C a multiple of 8");
  CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0,
        "flash attention forward on wgmma: qkv must be 16-byte aligned (the copy engine's "
        "rows) and out 4-byte aligned (pair stores)");
  CHECK(s.b * s.heads <= 65535, "flash attention forward on wgmma: batch x heads = "
                                    << s.b * s.heads << " exceeds the grid's 65535");
  CHECK(s.l < (int64_t{1} << 31) && 3 * s.c < (int64_t{1} << 31),
        "flash attention forward on wgmma: L and 3C under 2^31 (32-bit box coordinates)");
  CHECK(gemm_sm90_available(), "flash attention forward on wgmma " << sm90a_missing());
  if (s.b * s.l == 0) return;
  switch (s.head_dim()) {
    case 64: return launch_flash_wgmma<64>(s, qkv, out, lse);
    case 128: return launch_flash_wgmma<128>(s, qkv, out, lse);
    default: return launch_flash_wgmma<256>(s, qkv, out, lse);
  }
}

}  // namespace ddpm::cuda
