// Self-attention on the GPU, fused version: the (L x L) score matrix is never written to
// global memory. Same contract as the straightforward version in attention.cu (f32, packed
// qkv (B, L, 3C), out (B, L, C), lse (B, H, L)); read the two side by side.
//
// Forward (online softmax, as in FlashAttention): one block per (batch*head, tile of kBr
// query rows). The block keeps its q rows and an unnormalised output accumulator o in shared
// memory and walks the keys in tiles of kBc:
//   S = q k^T * scale                      (kBr x kBc, shared memory)
//   m_new = max(m, rowmax S);  P = exp(S - m_new);  c = exp(m - m_new)
//   l = l * c + rowsum P;      o = o * c + P v;     m = m_new
// and at the end out = o / l, lse = m + log l. Every value is rescaled, never dropped, so the
// result equals softmax(S) v up to rounding. Global traffic: q, k, v read once per query
// tile, out and lse written once; no L x L term at all.
//
// Backward (FlashAttention-2 split, deterministic: no atomics): with delta_i = dout_i . out_i
// (= sum_j P_ij dP_ij, one warp per row, kernel delta_kernel),
//   P_ij = exp(q_i.k_j * scale - lse_i)       recomputed from the saved lse
//   dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - delta_i) * scale
// dq_kernel: one block per query tile, loops over key tiles:   dq_i += sum_j dS_ij k_j
// dkv_kernel: one block per key tile, loops over query tiles:  dv_j += sum_i P_ij dout_i,
//                                                              dk_j += sum_i dS_ij q_i
// Each output row is owned by exactly one block and summed in a fixed order, so two runs give
// the same bits. P and dS are computed twice (once per kernel); that is the price of no
// atomics, and it is compute that stays on chip.
//
// Shared memory rows have stride ld = d | 1 (odd): the dot-product loops read column c of
// kBc different rows at once, and an odd stride puts them in different banks.
// Limits: fp32 on CUDA cores (no tensor cores), dot products from shared memory; head dims
// up to ~650 fit the H100's 227 KB of shared memory per block (checked, with a clear error).
#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

// Forward tiles. kBc = 32 keys per step so the row softmax maps one key to one lane of a
// warp; kBr = 16 query rows keeps q + o + one k/v tile in ~68 KB at d = 256 (3 blocks per
// H100 SM).
constexpr int kBr = 16;
constexpr int kBc = 32;
// Backward tiles: 16 x 16 keeps five d-wide row sets (q, dout, dq or k, v, dk, dv) within
// ~100 KB at d = 256.
constexpr int kTile = 16;

__device__ __forceinline__ int64_t qkv_row(const AttentionShape& s, int64_t b, int64_t t,
                                           int part, int64_t h) {
  return (b * s.l + t) * 3 * s.c + part * s.c + h * s.head_dim();
}

// Rows of a tile that exist: min(tile, L - start).
__device__ __forceinline__ int tile_extent(int64_t l, int64_t start, int tile) {
  return l - start < tile ? static_cast<int>(l - start) : tile;
}

__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float acc = 0.0f;
  for (int c = 0; c < n; ++c) acc += a[c] * b[c];
  return acc;
}

// Copy `rows` rows of d floats (global row t0 + r starts at src + r * src_stride) into
// shared memory with stride ld; rows [rows, tile) are zeroed so padded tiles stay finite.
__device__ __forceinline__ void load_rows(float* dst, int ld, int tile, const float* src,
                                          int64_t src_stride, int rows, int d, float mul = 1.0f) {
  for (int e = threadIdx.x; e < tile * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    dst[r * ld + c] = r < rows ? src[r * src_stride + c] * mul : 0.0f;
  }
}

// grid (ceil(L / kBr), B * H), kThreads threads, forward_smem_bytes(d) of shared memory.
__global__ void forward_kernel(AttentionShape s, float scale, const float* qkv, float* out,
                               float* lse) {
  DDPM_DYNAMIC_SHARED(float, smem);
  const int d = static_cast<int>(s.head_dim()), ld = d | 1;
  float* q = smem;              // [kBr][ld]   q rows, pre-multiplied by scale
  float* o = q + kBr * ld;      // [kBr][ld]   unnormalised output
  float* kv = o + kBr * ld;     // [kBc][ld]   the k tile, then the v tile
  float* p = kv + kBc * ld;     // [kBr][kBc]  scores, then probabilities
  float* m = p + kBr * kBc;     // [kBr]       running max
  float* l = m + kBr;           // [kBr]       running sum of exp
  float* corr = l + kBr;        // [kBr]       exp(m_old - m_new) of the current step

  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBr;
  const int rows = tile_extent(s.l, i0, kBr);
  const int64_t token_stride = 3 * s.c;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;

  load_rows(q, ld, kBr, qkv + qkv_row(s, b, i0, 0, h), token_stride, rows, d, scale);
  for (int e = threadIdx.x; e < kBr * ld; e += blockDim.x) o[e] = 0.0f;
  if (threadIdx.x < kBr) {
    m[threadIdx.x] = -INFINITY;
    l[threadIdx.x] = 0.0f;
  }
  for (int64_t j0 = 0; j0 < s.l; j0 += kBc) {
    const int cols = tile_extent(s.l, j0, kBc);
    __syncthreads();  // the previous v tile (and q, o, m on the first step) are complete
    load_rows(kv, ld, kBc, qkv + qkv_row(s, b, j0, 1, h), token_stride, cols, d);
    __syncthreads();
    for (int e = threadIdx.x; e < kBr * kBc; e += blockDim.x) {
      const int r = e / kBc, c = e % kBc;
      p[e] = c < cols ? dot(q + r * ld, kv + c * ld, d) : -INFINITY;  // masked keys: exp -> 0
    }
    __syncthreads();
    // Online softmax: warp w owns rows w, w + warps, ...; lane = key column.
    for (int r = warp; r < kBr; r += warps) {
      const float m_old = m[r];
      const float score = p[r * kBc + lane];
      const float m_new = fmaxf(m_old, warp_max(score));  // finite: every tile has a key
      const float prob = expf(score - m_new);
      const float row_sum = warp_sum(prob);
      p[r * kBc + lane] = prob;
      __syncwarp();  // every lane has read m[r] before lane 0 replaces it
      if (lane == 0) {
        const float c = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        corr[r] = c;
        l[r] = l[r] * c + row_sum;
        m[r] = m_new;
      }
    }
    // The v tile over the k tile, with no barrier before it: k's last reads (the scores) are
    // behind the barrier above, and the softmax touches only p, m, l and corr, so a warp done
    // with its rows loads v while the others finish theirs. (This kernel had a barrier here;
    // removing it failed no test, under ThreadSanitizer either, and the reason is the above.)
    load_rows(kv, ld, kBc, qkv + qkv_row(s, b, j0, 2, h), token_stride, cols, d);
    __syncthreads();  // v, P and corr ready for every row
    for (int e = threadIdx.x; e < kBr * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      float acc = o[r * ld + c] * corr[r];
      for (int j = 0; j < cols; ++j) acc += p[r * kBc + j] * kv[j * ld + c];
      o[r * ld + c] = acc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    out[(b * s.l + i0 + r) * s.c + h * d + c] = o[r * ld + c] / l[r];
  }
  if (static_cast<int>(threadIdx.x) < rows)
    lse[bh * s.l + i0 + threadIdx.x] = m[threadIdx.x] + logf(l[threadIdx.x]);
}

// delta[bh, i] = dout_i . out_i over head h's d channels; one warp per (b, h, i) row. A:
// fp32, or bf16 bits (bf16 activations), read into fp32.
template <class A>
__global__ void delta_kernel(AttentionShape s, const A* out, const A* dout, float* delta) {
  const int64_t d = s.head_dim(), rows = s.b * s.heads * s.l;
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int64_t i = row % s.l, bh = row / s.l, b = bh / s.heads, h = bh % s.heads;
  const int64_t base = (b * s.l + i) * s.c + h * d;
  float acc = 0.0f;
  for (int64_t c = threadIdx.x & 31; c < d; c += 32)
    acc += load(dout, base + c) * load(out, base + c);
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) delta[row] = acc;
}

// P_rc and dS_rc for query row r (q, g = dout rows) and key column c (k, v rows).
struct ProbAndGrad {
  float p, ds;
};
__device__ __forceinline__ ProbAndGrad prob_and_grad(const float* q, const float* g,
                                                     const float* k, const float* v, int d,
                                                     float scale, float row_lse,
                                                     float row_delta) {
  const float p = expf(dot(q, k, d) * scale - row_lse);
  return {p, p * (dot(g, v, d) - row_delta) * scale};
}

// grid (ceil(L / kTile), B * H): dq for one tile of query rows.
__global__ void dq_kernel(AttentionShape s, float scale, const float* qkv, const float* lse,
                          const float* delta, const float* dout, float* dqkv, bool add) {
  DDPM_DYNAMIC_SHARED(float, smem);
  const int d = static_cast<int>(s.head_dim()), ld = d | 1;
  float* q = smem;                 // [kTile][ld]
  float* g = q + kTile * ld;       // [kTile][ld]  dout rows
  float* dq = g + kTile * ld;      // [kTile][ld]
  float* k = dq + kTile * ld;      // [kTile][ld]
  float* v = k + kTile * ld;       // [kTile][ld]
  float* ds = v + kTile * ld;      // [kTile][kTile]
  float* row_lse = ds + kTile * kTile;
  float* row_delta = row_lse + kTile;

  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int rows = tile_extent(s.l, i0, kTile);
  const int64_t token_stride = 3 * s.c;
  load_rows(q, ld, kTile, qkv + qkv_row(s, b, i0, 0, h), token_stride, rows, d);
  load_rows(g, ld, kTile, dout + (b * s.l + i0) * s.c + h * d, s.c, rows, d);
  for (int e = threadIdx.x; e < kTile * ld; e += blockDim.x) dq[e] = 0.0f;
  if (static_cast<int>(threadIdx.x) < rows) {
    row_lse[threadIdx.x] = lse[bh * s.l + i0 + threadIdx.x];
    row_delta[threadIdx.x] = delta[bh * s.l + i0 + threadIdx.x];
  }
  for (int64_t j0 = 0; j0 < s.l; j0 += kTile) {
    const int cols = tile_extent(s.l, j0, kTile);
    __syncthreads();  // the previous step's k and dS are consumed
    load_rows(k, ld, kTile, qkv + qkv_row(s, b, j0, 1, h), token_stride, cols, d);
    load_rows(v, ld, kTile, qkv + qkv_row(s, b, j0, 2, h), token_stride, cols, d);
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * kTile; e += blockDim.x) {
      const int r = e / kTile, c = e % kTile;
      ds[e] = r < rows && c < cols ? prob_and_grad(q + r * ld, g + r * ld, k + c * ld,
                                                   v + c * ld, d, scale, row_lse[r],
                                                   row_delta[r]).ds
                                   : 0.0f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      float acc = dq[r * ld + c];
      for (int j = 0; j < cols; ++j) acc += ds[r * kTile + j] * k[j * ld + c];
      dq[r * ld + c] = acc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    store_grad(dqkv, qkv_row(s, b, i0 + r, 0, h) + c, dq[r * ld + c], add);
  }
}

// grid (ceil(L / kTile), B * H): dk and dv for one tile of key rows.
__global__ void dkv_kernel(AttentionShape s, float scale, const float* qkv, const float* lse,
                           const float* delta, const float* dout, float* dqkv, bool add) {
  DDPM_DYNAMIC_SHARED(float, smem);
  const int d = static_cast<int>(s.head_dim()), ld = d | 1;
  float* k = smem;                 // [kTile][ld]
  float* v = k + kTile * ld;       // [kTile][ld]
  float* dk = v + kTile * ld;      // [kTile][ld]
  float* dv = dk + kTile * ld;     // [kTile][ld]
  float* q = dv + kTile * ld;      // [kTile][ld]
  float* g = q + kTile * ld;       // [kTile][ld]  dout rows
  float* p = g + kTile * ld;       // [kTile][kTile]  query row x key column
  float* ds = p + kTile * kTile;   // [kTile][kTile]
  float* row_lse = ds + kTile * kTile;
  float* row_delta = row_lse + kTile;

  const int64_t bh = blockIdx.y, b = bh / s.heads, h = bh % s.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int cols = tile_extent(s.l, j0, kTile);
  const int64_t token_stride = 3 * s.c;
  load_rows(k, ld, kTile, qkv + qkv_row(s, b, j0, 1, h), token_stride, cols, d);
  load_rows(v, ld, kTile, qkv + qkv_row(s, b, j0, 2, h), token_stride, cols, d);
  for (int e = threadIdx.x; e < 2 * kTile * ld; e += blockDim.x) dk[e] = 0.0f;  // dk and dv
  for (int64_t i0 = 0; i0 < s.l; i0 += kTile) {
    const int rows = tile_extent(s.l, i0, kTile);
    __syncthreads();  // the previous step's q, dout, P and dS are consumed
    load_rows(q, ld, kTile, qkv + qkv_row(s, b, i0, 0, h), token_stride, rows, d);
    load_rows(g, ld, kTile, dout + (b * s.l + i0) * s.c + h * d, s.c, rows, d);
    if (static_cast<int>(threadIdx.x) < rows) {
      row_lse[threadIdx.x] = lse[bh * s.l + i0 + threadIdx.x];
      row_delta[threadIdx.x] = delta[bh * s.l + i0 + threadIdx.x];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * kTile; e += blockDim.x) {
      const int r = e / kTile, c = e % kTile;
      ProbAndGrad pg{0.0f, 0.0f};
      if (r < rows && c < cols)
        pg = prob_and_grad(q + r * ld, g + r * ld, k + c * ld, v + c * ld, d, scale, row_lse[r],
                           row_delta[r]);
      p[e] = pg.p;
      ds[e] = pg.ds;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * d; e += blockDim.x) {
      const int j = e / d, c = e % d;
      float acc_v = dv[j * ld + c], acc_k = dk[j * ld + c];
      for (int r = 0; r < rows; ++r) {
        acc_v += p[r * kTile + j] * g[r * ld + c];
        acc_k += ds[r * kTile + j] * q[r * ld + c];
      }
      dv[j * ld + c] = acc_v;
      dk[j * ld + c] = acc_k;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < cols * d; e += blockDim.x) {
    const int j = e / d, c = e % d;
    store_grad(dqkv, qkv_row(s, b, j0 + j, 1, h) + c, dk[j * ld + c], add);
    store_grad(dqkv, qkv_row(s, b, j0 + j, 2, h) + c, dv[j * ld + c], add);
  }
}

size_t row_bytes(const AttentionShape& s) {
  return static_cast<size_t>(s.head_dim() | 1) * sizeof(float);
}
size_t forward_smem_bytes(const AttentionShape& s) {
  return (2 * kBr + kBc) * row_bytes(s) + (kBr * kBc + 3 * kBr) * sizeof(float);
}
size_t dq_smem_bytes(const AttentionShape& s) {
  return 5 * kTile * row_bytes(s) + (kTile * kTile + 2 * kTile) * sizeof(float);
}
size_t dkv_smem_bytes(const AttentionShape& s) {
  return 6 * kTile * row_bytes(s) + (2 * kTile * kTile + 2 * kTile) * sizeof(float);
}

// Opt the kernel in to `bytes` of dynamic shared memory, or stop with a message naming the
// head dim when the device cannot give that much.
template <class Kernel>
void reserve_smem(Kernel kernel, size_t bytes, const AttentionShape& s, const char* which) {
  reserve_shared_memory(kernel, bytes,
                        std::string("fused attention ") + which + ": head dim " +
                            std::to_string(s.head_dim()),
                        "use the straightforward attention version");
}

dim3 tiles_grid(const AttentionShape& s, int tile) {
  CHECK(s.b * s.heads <= 65535, "fused attention: batch x heads = " << s.b * s.heads
                                    << " exceeds the grid's y extent 65535");
  return dim3(static_cast<unsigned>((s.l + tile - 1) / tile),
              static_cast<unsigned>(s.b * s.heads));
}

float softmax_scale(const AttentionShape& s) {
  return 1.0f / sqrtf(static_cast<float>(s.head_dim()));
}

}  // namespace

void attention_fused_forward(const AttentionShape& s, const float* qkv, float* out, float* lse) {
  if (s.b * s.l == 0) return;
  const size_t bytes = forward_smem_bytes(s);
  reserve_smem(forward_kernel, bytes, s, "forward");
  DDPM_LAUNCH(forward_kernel, tiles_grid(s, kBr), kThreads, bytes)(
      s, softmax_scale(s), qkv, out, lse);
}

template <class A>
void delta_rows(const AttentionShape& s, const A* out, const A* dout, float* delta) {
  const int64_t rows = s.b * s.heads * s.l;
  if (rows == 0) return;
  constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row
  const unsigned row_blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  DDPM_LAUNCH(delta_kernel<A>, row_blocks, kThreads)(s, out, dout, delta);
}

void attention_delta(const AttentionShape& s, const float* out, const float* dout,
                     float* delta) {
  delta_rows(s, out, dout, delta);
}
void attention_delta(const AttentionShape& s, const uint16_t* out, const uint16_t* dout,
                     float* delta) {
  delta_rows(s, out, dout, delta);
}

void attention_fused_backward(const AttentionShape& s, const float* qkv, const float* out,
                              const float* lse, const float* dout, float* dqkv, float* delta,
                              GradWrite dqkv_write) {
  if (s.b * s.l == 0) return;
  const bool add = dqkv_write == GradWrite::Accumulate;
  attention_delta(s, out, dout, delta);
  const size_t dq_bytes = dq_smem_bytes(s), dkv_bytes = dkv_smem_bytes(s);
  reserve_smem(dq_kernel, dq_bytes, s, "backward (dq)");
  reserve_smem(dkv_kernel, dkv_bytes, s, "backward (dk, dv)");
  DDPM_LAUNCH(dq_kernel, tiles_grid(s, kTile), kThreads, dq_bytes)(
      s, softmax_scale(s), qkv, lse, delta, dout, dqkv, add);
  DDPM_LAUNCH(dkv_kernel, tiles_grid(s, kTile), kThreads, dkv_bytes)(
      s, softmax_scale(s), qkv, lse, delta, dout, dqkv, add);
}

}  // namespace ddpm::cuda
