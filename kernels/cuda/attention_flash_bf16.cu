// Self-attention forward on bf16 tensor cores (FlashAttention-2's forward on mma.sync): the
// third version, after the straightforward one (attention.cu: three steps, the L x L matrix
// in DRAM) and the fused fp32 one (attention_fused.cu: online softmax on CUDA cores, dot
// products from shared memory). Same contract: f32 packed qkv (B, L, 3C), out (B, L, C),
// lse (B, H, L). Read the three side by side.
//
// What changes from the fused version, and why:
//  1. The two matrix products run on tensor cores (mma.sync.m16n8k16, bf16 operands, fp32
//     accumulation; kernels/cuda/ptx.cuh has the fragment layouts): S = Q K^T and O += P V.
//     q, k and v are rounded to bf16 (nearest even, kernels/bf16.h) as they are staged into
//     shared memory; P is rounded to bf16 as it becomes the A operand of P V. Softmax
//     statistics (row max m, row sum l), S, and O stay fp32.
//  2. Work is split by warps, not by threads: a block of 4 warps owns 64 query rows, each
//     warp 16 of them, and a warp's S tile (16 x kBc), its softmax and its O (16 x D) never
//     leave its registers. No shared memory for S or P, no barrier inside the softmax.
//  3. P goes from the S accumulators straight into A fragments: the accumulator layout of
//     two adjacent 8-key n-tiles is exactly the A layout of one 16-key k-chunk (d[0..1] =
//     D[g][2t..], d[2..3] = D[g+8][2t..] against a[0] = A[g][2t..], a[1] = A[g+8][2t..],
//     a[2], a[3] the same 8 keys on), so P is packed to bf16 pairs in registers.
//  4. Fragments come from shared memory by ldmatrix: Q and K row-major (K's rows are the
//     columns of K^T: the "col" B operand without a transpose), V through ldmatrix.trans
//     (B = V needs consecutive keys in one register). Rows are padded by 8 bf16 (16 bytes),
//     so the 8 row addresses of one 8x8 matrix fall in 8 different 16-byte bank groups.
//
// Per key tile (kBc keys), warp w (query rows 16w..16w+15 of the block), lane (g = lane/4,
// t = lane%4; the lane holds rows g and g+8):
//   S = Q K^T * scale           (D/16 k-steps x kBc/8 n-tiles of mma)
//   keys >= L: S = -inf          (partial last tile)
//   m_new = max(m, rowmax S)     (the row's 4 lanes agree through two shuffles)
//   if m_new - m > 8 / log2 e for some row of the warp (a vote; "stale max" below):
//     c = exp(m - m_new);  m = m_new;  l = l c;  O = O c
//   P = exp(S - m);  l = l + rowsum P;  O = O + bf16(P) V
// and at the end out = O / l, lse = m + log l. FlashAttention-2 moves m to m_new on every
// tile; leaving it up to 2^8 below the true max changes only the common scale of P, l and
// O (exponentials up to 256, bf16 P rounded relative to its size alike), and skips the
// O rescale (D/2 multiplies a lane) on the tiles where no row's max jumped that far, which
// past the first is nearly all of them (FlashAttention-4 does the same).
//
// Launch constants: 4 warps (64 query rows per block: enough rows per K/V tile to reuse
// each staged tile 4 times, few enough registers for O at D = 256: 128 floats per thread);
// kBc = 64 keys per tile, 32 at D = 256 (its S then needs 16 floats instead of 32, keeping
// the thread under 255 registers; ptxas sm_90: 99 / 128 / 179 / 236 registers at D = 32 /
// 64 / 128 / 256 on bf16 activations, no spills; the launch bounds: FlashTiles). Shared
// memory: (64 + 2 kBc) rows of D + 8 bf16: 15 / 26 / 52 / 66 KB.
//
// On bf16 activations (A = bf16 bits) the rows need no conversion, so K and V are copied by
// cp.async into two stages (flash::copy_rows): tile j+1 is in flight while the warps
// multiply tile j, one barrier per tile (shared memory (64 + 4 kBc) rows: 25 / 45 / 85 /
// 99 KB). fp32 rows still go through registers (stage_rows), one stage. The backward is
// attention_flash_bf16_backward.cu; it pipelines its per-step tiles the same way.
#include <algorithm>
#include <cmath>
#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/flash_bf16.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

namespace ddpm::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // query rows per block
using flash::kPad;
using flash::stage_rows;

// A: the storage of qkv. fp32 rows are converted through registers, one K/V tile at a
// time; bf16 rows are copied by cp.async into two K/V stages, the next tile in flight while
// the warps multiply the current one.
template <int D, class A>
struct FlashTiles {
  static constexpr int kBc = D >= 256 ? 32 : 64;  // keys per tile
  static constexpr int kLd = D + kPad;            // bf16 per shared-memory row
  static constexpr bool kAsync = sizeof(A) == 2;  // bf16 rows: cp.async, double buffered
  static constexpr int kStages = kAsync ? 2 : 1;
  static constexpr size_t kSmemBytes =
      size_t(kRows + 2 * kStages * kBc) * kLd * sizeof(uint16_t);
  // Blocks an SM holds by shared memory (an H100's 228 KB, 1 KB reserved a block), at most
  // 4 (128 registers a thread): the launch bounds ask ptxas to stay within the registers
  // those blocks leave it. Left free, it spent them on V fragments loaded far ahead (242 at
  // d = 256 on fp32 rows, where the shared memory allows 3 blocks of 168).
  static constexpr int kMinBlocks =
      std::min<size_t>(4, (228 * 1024) / (kSmemBytes + 1024));
};

// grid (ceil(L / 64), B * H), 128 threads, FlashTiles<D>::kSmemBytes of shared memory.
// A: the storage of qkv and out, fp32 or bf16 bits (bf16 activations).
template <int D, class A>
__global__ void __launch_bounds__(kThreads, (FlashTiles<D, A>::kMinBlocks))
flash_forward_bf16(AttentionShape s, float scale, const A* qkv, A* out, float* lse) {
#if DDPM_HAS_SM80_TENSOR_CORES
  using T = FlashTiles<D, A>;
  constexpr int kBc = T::kBc, kLd = T::kLd;
  constexpr int kNT = kBc / 8;  // 8-key n-tiles of S per warp
  constexpr int kDT = D / 8;    // 8-channel n-tiles of O per warp
  DDPM_DYNAMIC_SHARED(uint16_t, smem);
  uint16_t* const q_s = smem;                // [kRows][kLd]
  uint16_t* const kv_s = q_s + kRows * kLd;  // [kStages][K, V][kBc][kLd]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int q8 = lane / 8, i8 = lane % 8;  // ldmatrix: this lane addresses row i8 of matrix q8
  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t stride = 3 * s.c;
  const A* const base = qkv + b * s.l * stride + h * D;  // token 0's q of head h
  stage_rows<D, kRows, kThreads>(q_s, base + i0 * stride, stride,
                                 static_cast<int>(s.l - i0 < kRows ? s.l - i0 : kRows));

  float o[kDT][4] = {};                    // O rows g, g+8 of this warp: [n-tile][d0..d3]
  float m[2] = {-INFINITY, -INFINITY};     // running max of rows g, g+8 (of q.k, unscaled)
  const float scale_log2 = scale * flash::kLog2e;
  float l[2] = {0.0f, 0.0f};               // running sum (this lane's columns only)
  const int row0 = 16 * warp;              // the warp's first row in the block's tile

  // K and V of the tile at key j0 into stage st (async for bf16 rows: flash::copy_rows).
  const auto stage_kv = [&](int64_t j0, int st) {
    const int keys = static_cast<int>(s.l - j0 < kBc ? s.l - j0 : kBc);
    uint16_t* const k_dst = kv_s + st * 2 * kBc * kLd;
    if constexpr (T::kAsync) {
      flash::copy_rows<D, kBc, kThreads>(k_dst, base + j0 * stride + s.c, stride, keys);
      flash::copy_rows<D, kBc, kThreads>(k_dst + kBc * kLd, base + j0 * stride + 2 * s.c,
                                         stride, keys);
      ptx::cp_async_commit();
    } else {
      stage_rows<D, kBc, kThreads>(k_dst, base + j0 * stride + s.c, stride, keys);
      stage_rows<D, kBc, kThreads>(k_dst + kBc * kLd, base + j0 * stride + 2 * s.c, stride,
                                   keys);
    }
  };
  if constexpr (T::kAsync) stage_kv(0, 0);  // the first tile in flight before the loop

  for (int64_t j0 = 0, tile = 0; j0 < s.l; j0 += kBc, ++tile) {
    const int keys = static_cast<int>(s.l - j0 < kBc ? s.l - j0 : kBc);
    const int st = static_cast<int>(tile % T::kStages);
    const uint16_t* const k_s = kv_s + st * 2 * kBc * kLd;  // [kBc][kLd]
    const uint16_t* const v_s = k_s + kBc * kLd;            // [kBc][kLd]
    if constexpr (T::kAsync) {
      ptx::cp_async_wait<0>();  // this thread's copies of tile `tile` have landed
      __syncthreads();          // everyone's; and every warp is done with tile - 1, whose
                                // stage now receives tile + 1 while this one is multiplied
      if (j0 + kBc < s.l) stage_kv(j0 + kBc, 1 - st);
    } else {
      __syncthreads();  // every warp is done with the previous K and V (and Q is staged)
      stage_kv(j0, 0);
      __syncthreads();
    }

    // S = Q K^T: A = 16 rows of Q at k-chunk kk; B = two 8-key n-tiles of K per ldmatrix.
    float sc[kNT][4] = {};
    for (int kk = 0; kk < D; kk += 16) {
      uint32_t a[4];
      ptx::ldmatrix_x4(a, q_s + (row0 + lane % 16) * kLd + kk + 8 * (lane / 16));
      for (int n = 0; n < kNT; n += 2) {
        uint32_t r[4];  // matrix q8: keys 8n + 8 (q8 >> 1), channels kk + 8 (q8 & 1)
        ptx::ldmatrix_x4(r, k_s + (8 * n + 8 * (q8 >> 1) + i8) * kLd + kk + 8 * (q8 & 1));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        ptx::mma_bf16_16816(sc[n], a, b0);
        ptx::mma_bf16_16816(sc[n + 1], a, b1);
      }
    }

    // Online softmax over this tile on the raw dot products (flash::softmax_tile): S
    // becomes P, l and m move, and O is rescaled where a row's max moved far.
    flash::softmax_tile(sc, keys, t, scale_log2, m, l, o);

    // O += P V: A = P's 16-key chunk c from n-tiles 2c, 2c+1; B = V via ldmatrix.trans.
    for (int c = 0; c < kNT / 2; ++c) {
      uint32_t a[4];
      flash::p_fragment(sc, c, a);
      for (int dn = 0; dn < kDT; dn += 2) {
        uint32_t r[4];  // matrix q8: keys 16c + 8 (q8 & 1), channels 8 dn + 8 (q8 >> 1)
        ptx::ldmatrix_x4_trans(r, v_s + (16 * c + 8 * (q8 & 1) + i8) * kLd + 8 * dn +
                                      8 * (q8 >> 1));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        ptx::mma_bf16_16816(o[dn], a, b0);
        ptx::mma_bf16_16816(o[dn + 1], a, b1);
      }
    }
  }

  // out = O / l, lse = m + log l
  flash::store_output(s, o, l, m, scale, i0 + row0 + g, b, h, t, out, lse);
#endif
}

template <int D, class A>
void launch_flash(const AttentionShape& s, const A* qkv, A* out, float* lse) {
  constexpr size_t bytes = FlashTiles<D, A>::kSmemBytes;
  reserve_shared_memory(flash_forward_bf16<D, A>, bytes,
                        "bf16 flash attention forward: head dim " + std::to_string(D),
                        flash::kInstead);
  const dim3 grid(static_cast<unsigned>((s.l + kRows - 1) / kRows),
                  static_cast<unsigned>(s.b * s.heads));
  DDPM_LAUNCH((flash_forward_bf16<D, A>), grid, kThreads, bytes)(
      s, 1.0f / sqrtf(static_cast<float>(D)), qkv, out, lse);
}

}  // namespace

bool attention_flash_bf16_supports(const AttentionShape& s) {
  const int64_t d = s.head_dim();
  return (d == 32 || d == 64 || d == 128 || d == 256) && s.c % s.heads == 0;
}

namespace {

template <class A>
void flash_forward(const AttentionShape& s, const A* qkv, A* out, float* lse) {
  CHECK(attention_flash_bf16_supports(s),
        "bf16 flash attention: head dim " << s.head_dim() << " (C " << s.c << ", " << s.heads
                                          << " heads) is not 32, 64, 128 or 256");
  CHECK(reinterpret_cast<uintptr_t>(qkv) % (8 * sizeof(A) / 2) == 0 &&
            reinterpret_cast<uintptr_t>(out) % (2 * sizeof(A)) == 0,
        "bf16 flash attention: qkv must be " << 8 * sizeof(A) / 2 << "-byte and out "
                                             << 2 * sizeof(A)
                                             << "-byte aligned (4-element loads, pair stores)");
  CHECK(s.b * s.heads <= 65535,
        "bf16 flash attention: batch x heads = " << s.b * s.heads << " exceeds the grid's 65535");
  CHECK(compute_capability() >= 80, "bf16 flash attention needs sm_80 or later, this device is sm_"
                                        << compute_capability());
  if (s.b * s.l == 0) return;
  switch (s.head_dim()) {
    case 32: return launch_flash<32>(s, qkv, out, lse);
    case 64: return launch_flash<64>(s, qkv, out, lse);
    case 128: return launch_flash<128>(s, qkv, out, lse);
    default: return launch_flash<256>(s, qkv, out, lse);
  }
}

}  // namespace

void attention_flash_bf16_forward(const AttentionShape& s, const float* qkv, float* out,
                                  float* lse) {
  flash_forward(s, qkv, out, lse);
}
void attention_flash_bf16_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                                  float* lse) {
  flash_forward(s, qkv, out, lse);
}

}  // namespace ddpm::cuda
