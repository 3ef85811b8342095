// Self-attention through library GEMMs: the straightforward version's steps (attention.cu:
// the L x L matrices in memory), with the five products handed to cuBLAS and two row
// kernels of our own between them. Two storages, one code (templated on A):
//   bf16 activations: qkv, out, P, dS and the gradients bf16, the products on bf16 tensor
//     cores (fp32 sums), S and dP fp32;
//   fp32: every operand fp32 and the products cuBLAS's fp32 SGEMMs (CUBLAS_DEFAULT_MATH:
//     no TF32; under precision tf32 the engine leaves attention in fp32, as it does for
//     the fused kernel). P may be stored over S and dS over dP: the row kernels read an
//     element before they overwrite it, in the same thread.
//
// Why, beside the flash kernels (bf16): at short sequences the L x L matrices are small, and
// the library's GEMMs are far faster than our flash kernels' mma loops. At the CIFAR-10
// model's 16x16 attention (L = 256, one head of d = 256, batch 128) an H200 ran the two
// forward GEMMs alone in 0.036 ms (`kernel-bench attention`'s "cuBLAS bf16 GEMMs only" row,
// 240 TFLOP/s) where the flash forward took 0.082 ms and cuDNN's fused SDPA 0.053; the
// flash backward took 0.387 against SDPA's 0.193. What the matrices cost is memory: S and
// dP in fp32, P and dS in bf16, 12 bytes per score, 200 MB at that shape (about 40 us of
// the H200's bandwidth), where the products are 8.6 GFLOP forward and 17 backward. The op
// takes this version where that trade favours it (attention_gemm_bf16_pays, attention.cuh):
// head dims of 128 and up at L <= 6 d.
//
// Why beside the fused fp32 kernel (fp32): that kernel's dot products run on the CUDA cores
// from shared memory at a few TFLOP/s: the same H200 took 2.07 ms forward and 6.84 ms
// backward at the model's shape (4.2 and 2.5 TFLOP/s), where cuBLAS's SGEMMs ran the
// linear layers at 41-65% of the fp32 peak (27-43 TFLOP/s): predicted ~0.3 ms and ~0.6 ms
// here, unmeasured. Its matrices (S and P in one buffer, dP and dS in another) are 8 bytes
// per score; the op keeps P for the backward while the batch's are at most twice qkv's size,
// L <= 6 d (attention_gemm_fp32_keeps_p: ratio L / 3d), and recomputes it past that.
//
// P recomputed (fp32, attention_gemm_recompute_*): the batch in chunks of samples whose
// matrices are at most twice qkv's size (attention_gemm_fp32_chunk: 6 B d / L samples, at
// least one), each chunk's S and P in one scratch buffer the next chunk reuses; only out
// (and lse) outlive the forward. The backward runs each chunk's S products and softmax
// again (the same calls, so the forward's bits of P) before its own steps: a quarter more
// products in the backward and one more pass of the softmax, for scratch that stops growing
// with the batch and nothing L x L kept between the passes. Where the fused kernel ran
// instead: the same H200 took it 12.3 / 36.5 ms at a 32x32 map's 4 heads of 32 (L 1024,
// batch 128: 5.6 and 3.8 TFLOP/s), and the two forward products alone 2.48 ms there
// (`kernel-bench attention`'s "cuBLAS GEMMs only", 28 TFLOP/s, S and P through HBM). From
// those, with the row kernels at HBM speed: predicted ~3.6 ms forward and ~9 ms backward
// (~3.4x and ~4x), unmeasured; chunks of 24 samples there (400 MB a buffer, 2.1 GB kept
// for the whole batch).
//
// Forward, per (batch, head), rows i (queries), columns j (keys):
//   S  = q k^T scale                    cuBLAS, fp32 out (scores up to ~70 need fp32's digits)
//   P  = exp(S - lse_i), lse_i = log sum_j exp(S_ij)   softmax_rows: a block per row, P as
//                                       stored (bf16: rounded; fp32: over S)
//   O  = P v                            cuBLAS, out as stored
// P is kept (B H L L, as stored) for the backward, or (fp32, past L = 6 d) recomputed.
// Backward:
//   dP = dout v^T                       cuBLAS, fp32 out
//   dS = P (dP - sum_j P dP) scale      ds_rows: a block per row, dS as stored (fp32: over dP)
//   dv = P^T dout,  dq = dS k,  dk = dS^T q     cuBLAS, into dqkv (beta 1 adds, 0 assigns)
// The row sum sum_j P_ij dP_ij is delta_i = dout_i . out_i of the flash kernels, computed
// from the same (in bf16, rounded) P the products use. Every product sums in cuBLAS's fixed
// order and every row kernel in a fixed block tree: deterministic.
//
// Layouts. The L x L matrices are (B, H, L, L), row i of (b, h) at ((b H + h) L + i) L.
// cuBLAS is column-major, so each row-major buffer is the column-major transpose of itself
// (kernels/cuda/linear.cu's trick): with X(r, c) the column-major view,
//   S:  X = S^T = k q^T         gemm(T, N, m = L, n = L, k = d)  A = k rows, B = q rows
//   O:  O^T = v^T P^T           gemm(N, N, m = d, n = L, k = L)  A = v rows, B = P
//   dP: as S with v, dout
//   dv: dv^T = dout^T P         gemm(N, T, m = d, n = L, k = L)  A = dout rows, B = P
//   dq: dq^T = k^T dS^T         gemm(N, N, ...)                  A = k rows, B = dS
//   dk: dk^T = q^T dS           gemm(N, T, ...)                  A = q rows, B = dS
// where "k rows" is the column-major (d x L) matrix of k's rows in qkv (ld 3C). One
// strided-batched call per head and product (heads are not one stride apart from batch to
// batch).
#include <algorithm>
#include <cmath>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/blas.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

// One block per row of S: the row's max, its log-sum-exp (to lse, unless null), then
// P = exp(S - lse) as A stores it (rounded to bf16, or fp32), over S if p is s.
template <class A>
__global__ void softmax_rows(int64_t l, const float* s, A* p, float* lse) {
  __shared__ float scratch[32];
  const float* row = s + static_cast<int64_t>(blockIdx.x) * l;
  A* out = p + static_cast<int64_t>(blockIdx.x) * l;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) sum += expf(row[j] - mx);
  const float row_lse = mx + logf(block_sum(sum, scratch));
  if (threadIdx.x == 0 && lse != nullptr) lse[blockIdx.x] = row_lse;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) store(out, j, expf(row[j] - row_lse));
}

// One block per row: dS = P (dP - sum_j P dP) scale, P and dS as A stores them, dP fp32;
// dS over dP if ds is dp.
template <class A>
__global__ void ds_rows(int64_t l, float scale, const A* p, const float* dp, A* ds) {
  __shared__ float scratch[32];
  const int64_t at = static_cast<int64_t>(blockIdx.x) * l;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) dot += load(p, at + j) * dp[at + j];
  dot = block_sum(dot, scratch);
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x)
    store(ds, at + j, load(p, at + j) * (dp[at + j] - dot) * scale);
}

// Threads per row kernel: L = 256 (the model's) is one element a thread.
constexpr int kRowThreads = 256;

// One matrix of a per-head product, inputs and outputs alike: a base pointer (T: bf16 bits
// or float), its column-major leading dimension and the stride from one sample's matrix to
// the next (elements). An output's T names its cuBLAS type (data_type).
template <typename T>
struct Operand {
  T* at;
  int64_t ld, stride;
  Operand(T* at_, int64_t ld_, int64_t stride_) : at(at_), ld(ld_), stride(stride_) {}
  template <typename U>  // bf16 bits as const bf16 bits
  Operand(const Operand<U>& o) : Operand(o.at, o.ld, o.stride) {}
};

constexpr cudaDataType data_type(const uint16_t*) { return CUDA_R_16BF; }
constexpr cudaDataType data_type(const float*) { return CUDA_R_32F; }

// C_b = alpha op(A_b) op(B_b) + beta C_b for every sample b: A and B of storage A (bf16, on
// tensor cores; fp32, cuBLAS's SGEMM without TF32: the handle's default math), C bf16 or
// fp32. Sums in fp32 either way.
template <typename A, typename C>
void product(const AttentionShape& s, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
             int64_t n, int64_t k, float alpha, Operand<const A> a, Operand<const A> b,
             float beta, Operand<C> c) {
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  CUBLAS_CHECK(blas::api().gemm_strided_batched_ex(
      blas::handle(), ta, tb, i(m), i(n), i(k), &alpha, a.at, data_type(a.at), i(a.ld),
      a.stride, b.at, data_type(b.at), i(b.ld), b.stride, &beta, c.at, data_type(c.at),
      i(c.ld), c.stride, i(s.b), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The shape's matrices for head h: rows of part `part` of qkv or dqkv (0 q, 1 k, 2 v), rows
// of a (B, L, C) tensor (out, dout), and the head's L x L matrix of a (B, H, L, L) buffer.
struct Head {
  const AttentionShape& s;
  int64_t h;
  int64_t d() const { return s.head_dim(); }
  template <typename T>
  Operand<T> qkv_rows(T* qkv, int part) const {
    return {qkv + part * s.c + h * d(), 3 * s.c, s.l * 3 * s.c};
  }
  template <typename T>
  Operand<T> rows(T* x) const { return {x + h * d(), s.c, s.l * s.c}; }
  template <typename T>
  Operand<T> matrix(T* x) const { return {x + h * s.l * s.l, s.l, s.heads * s.l * s.l}; }
};

// bf16: cuBLAS's bf16 rows 16-byte aligned; fp32: any head dim.
template <class A>
void check(const AttentionShape& s, const char* what) {
  const bool bf16 = sizeof(A) == 2;
  CHECK(s.c % s.heads == 0 && (!bf16 || s.head_dim() % 8 == 0),
        (bf16 ? "bf16" : "fp32") << " GEMM attention " << what << ": " << s.c
            << " channels in " << s.heads << " heads"
            << (bf16 ? " must give a head dim that is a whole multiple of 8 (cuBLAS's 16-byte "
                       "bf16 rows)"
                     : " do not split into whole heads"));
}

// The forward's first half: S = q k^T scale (the S products) and the softmax of its rows,
// P as stored (over S if p is scores) and lse (unless null). The same calls give the same
// bits: the recomputing backward's P is the forward's.
template <class A>
void probabilities(const AttentionShape& s, const A* qkv, A* p, float* scores, float* lse) {
  const float scale = 1.0f / sqrtf(static_cast<float>(s.head_dim()));
  for (int64_t h = 0; h < s.heads; ++h) {
    const Head head{s, h};
    product<A>(s, CUBLAS_OP_T, CUBLAS_OP_N, s.l, s.l, head.d(), scale, head.qkv_rows(qkv, 1),
               head.qkv_rows(qkv, 0), 0.0f, head.matrix(scores));
  }
  const auto rows = static_cast<unsigned>(s.b * s.heads * s.l);
  DDPM_LAUNCH(softmax_rows<A>, rows, kRowThreads)(s.l, scores, p, lse);
}

template <class A>
void forward(const AttentionShape& s, const A* qkv, A* out, float* lse, A* p, float* scores) {
  check<A>(s, "forward");
  if (s.b * s.l == 0) return;
  probabilities(s, qkv, p, scores, lse);
  for (int64_t h = 0; h < s.heads; ++h) {
    const Head head{s, h};
    product<A>(s, CUBLAS_OP_N, CUBLAS_OP_N, head.d(), s.l, s.l, 1.0f, head.qkv_rows(qkv, 2),
               head.matrix<const A>(p), 0.0f, head.rows(out));
  }
}

template <class A>
void backward(const AttentionShape& s, const A* qkv, const A* p, const A* dout, A* dqkv,
              float* dp, A* ds, GradWrite dqkv_write) {
  check<A>(s, "backward");
  if (s.b * s.l == 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(s.head_dim()));
  const float beta = dqkv_write == GradWrite::Accumulate ? 1.0f : 0.0f;
  for (int64_t h = 0; h < s.heads; ++h) {  // dP = dout v^T
    const Head head{s, h};
    product<A>(s, CUBLAS_OP_T, CUBLAS_OP_N, s.l, s.l, head.d(), 1.0f, head.qkv_rows(qkv, 2),
               head.rows(dout), 0.0f, head.matrix(dp));
  }
  const auto rows = static_cast<unsigned>(s.b * s.heads * s.l);
  DDPM_LAUNCH(ds_rows<A>, rows, kRowThreads)(s.l, scale, p, dp, ds);
  for (int64_t h = 0; h < s.heads; ++h) {
    const Head head{s, h};
    const int64_t d = head.d();
    product<A>(s, CUBLAS_OP_N, CUBLAS_OP_T, d, s.l, s.l, 1.0f, head.rows(dout), head.matrix(p),
               beta, head.qkv_rows(dqkv, 2));  // dv = P^T dout
    product<A>(s, CUBLAS_OP_N, CUBLAS_OP_N, d, s.l, s.l, 1.0f, head.qkv_rows(qkv, 1),
               head.matrix<const A>(ds), beta, head.qkv_rows(dqkv, 0));  // dq = dS k
    product<A>(s, CUBLAS_OP_N, CUBLAS_OP_T, d, s.l, s.l, 1.0f, head.qkv_rows(qkv, 0),
               head.matrix<const A>(ds), beta, head.qkv_rows(dqkv, 1));  // dk = dS^T q
  }
}

// The samples [b0, b0 + chunk) of s's batch (fewer in the last chunk): their shape, and the
// offsets (elements) of their first sample in qkv and dqkv, in out and dout, and in lse.
struct Chunk {
  AttentionShape s;
  int64_t qkv, rows, lse;
};
Chunk chunk_at(const AttentionShape& s, int64_t b0, int64_t chunk) {
  AttentionShape c = s;
  c.b = std::min(chunk, s.b - b0);
  return {c, b0 * s.l * 3 * s.c, b0 * s.l * s.c, b0 * s.heads * s.l};
}

void check_chunk(const AttentionShape& s, int64_t chunk, const char* what) {
  CHECK(chunk >= 1, "fp32 GEMM attention " << what << ", P recomputed: chunks of " << chunk
                                           << " samples (at least 1) for a batch of " << s.b);
}

}  // namespace

bool attention_gemm_bf16_pays(const AttentionShape& s) {
  return s.c % s.heads == 0 && s.head_dim() % 8 == 0 && s.head_dim() >= 128 &&
         s.l <= 6 * s.head_dim();
}

bool attention_gemm_fp32_keeps_p(const AttentionShape& s) {
  return s.c % s.heads == 0 && s.l <= 6 * s.head_dim();
}

int64_t attention_gemm_fp32_chunk(const AttentionShape& s) {
  const int64_t batch = std::max<int64_t>(s.b, 1);
  if (s.l == 0) return batch;
  // chunk H L^2 <= 2 B L 3C, C = H d
  return std::clamp<int64_t>(6 * s.b * s.head_dim() / s.l, 1, batch);
}

int64_t attention_gemm_matrix_elements(const AttentionShape& s) {
  return s.b * s.heads * s.l * s.l;
}

void attention_gemm_forward(const AttentionShape& s, const uint16_t* qkv, uint16_t* out,
                            float* lse, uint16_t* p, float* scores) {
  forward(s, qkv, out, lse, p, scores);
}
void attention_gemm_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                            float* p, float* scores) {
  forward(s, qkv, out, lse, p, scores);
}

void attention_gemm_recompute_forward(const AttentionShape& s, int64_t chunk, const float* qkv,
                                      float* out, float* lse, float* scratch) {
  check_chunk(s, chunk, "forward");
  for (int64_t b0 = 0; b0 < s.b; b0 += chunk) {
    const Chunk c = chunk_at(s, b0, chunk);
    forward(c.s, qkv + c.qkv, out + c.rows, lse == nullptr ? nullptr : lse + c.lse, scratch,
            scratch);
  }
}

void attention_gemm_recompute_backward(const AttentionShape& s, int64_t chunk, const float* qkv,
                                       const float* dout, float* dqkv, float* p, float* dp,
                                       GradWrite dqkv_write) {
  check_chunk(s, chunk, "backward");
  check<float>(s, "backward");
  if (s.b * s.l == 0) return;
  for (int64_t b0 = 0; b0 < s.b; b0 += chunk) {
    const Chunk c = chunk_at(s, b0, chunk);
    probabilities(c.s, qkv + c.qkv, p, p, /*lse=*/nullptr);  // the forward's P again
    backward(c.s, qkv + c.qkv, p, dout + c.rows, dqkv + c.qkv, dp, dp, dqkv_write);
  }
}

void attention_gemm_backward(const AttentionShape& s, const uint16_t* qkv, const uint16_t* p,
                             const uint16_t* dout, uint16_t* dqkv, float* dp, uint16_t* ds,
                             GradWrite dqkv_write) {
  backward(s, qkv, p, dout, dqkv, dp, ds, dqkv_write);
}
void attention_gemm_backward(const AttentionShape& s, const float* qkv, const float* p,
                             const float* dout, float* dqkv, float* dp, float* ds,
                             GradWrite dqkv_write) {
  backward(s, qkv, p, dout, dqkv, dp, ds, dqkv_write);
}

}  // namespace ddpm::cuda
