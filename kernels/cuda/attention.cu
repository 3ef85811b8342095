// Self-attention on the GPU, straightforward version, as separate steps over a
// materialised (B*H, L, L) score matrix P:
//   scores   P[bh, i, j] = q_i . k_j * scale        one thread per (bh, i, j)
//   softmax  per row: max, sum of exp, lse, P = exp(S - lse)   one block per row
//            (backward: P = exp(S - lse) from the saved lse, no max/sum)
//   output   out[b, i, h*d + c] = sum_j P[i, j] v_j[c]           one thread per output
// Backward, with dP in a second L x L buffer:
//   dv[j] += sum_i P[i, j] dout_i      dP[i, j] = dout_i . v_j
//   dS[i, j] = P (dP - sum_j P dP) * scale (row kernel, in place of dP)
//   dq[i] += sum_j dS[i, j] k_j        dk[j] += sum_i dS[i, j] q_i
// Every sum runs in a fixed order in one thread or one block tree: deterministic. Each
// element of dqkv is stored once, by one thread, so the first gradient is written outright
// (GradWrite::Assign) as easily as it is added.
// Limits: the L x L matrix round-trips through memory several times (B*L*L*4 bytes = 33 MB
// for the CIFAR model's 16x16 attention at batch 128) and the dot products re-read q, k, v
// from global memory; the fused online-softmax kernel (attention_fused.cu) removes both.
#include "engine/cuda_check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

// Pointer to element (b, t) of part `part` (0 q, 1 k, 2 v) of head h in qkv (B, L, 3C).
__device__ __forceinline__ int64_t qkv_index(const AttentionShape& s, int64_t b, int64_t t,
                                             int part, int64_t h) {
  return (b * s.l + t) * 3 * s.c + part * s.c + h * s.head_dim();
}

__global__ void scores_kernel(AttentionShape s, const float* qkv, float scale, float* p) {
  const int64_t l = s.l, d = s.head_dim();
  DDPM_GRID_STRIDE(idx, s.b * s.heads * l * l) {
    const int64_t j = idx % l, i = (idx / l) % l, bh = idx / (l * l);
    const int64_t b = bh / s.heads, h = bh % s.heads;
    const float* q = qkv + qkv_index(s, b, i, 0, h);
    const float* k = qkv + qkv_index(s, b, j, 1, h);
    float acc = 0.0f;
    for (int64_t c = 0; c < d; ++c) acc += q[c] * k[c];
    p[idx] = acc * scale;
  }
}

// One block per row of P: turn scores into probabilities. Forward (lse_in null): compute
// the row's log-sum-exp and write it to lse_out. Backward: use the saved lse_in.
__global__ void softmax_rows_kernel(int64_t l, float* p, const float* lse_in, float* lse_out) {
  __shared__ float scratch[32];
  float* row = p + static_cast<int64_t>(blockIdx.x) * l;
  float row_lse;
  if (lse_in) {
    row_lse = lse_in[blockIdx.x];
  } else {
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < l; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);  // each warp's max by shuffles, then the warps' maxima
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < l; j += blockDim.x) sum += expf(row[j] - mx);
    row_lse = mx + logf(block_sum(sum, scratch));
    if (threadIdx.x == 0) lse_out[blockIdx.x] = row_lse;
  }
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) row[j] = expf(row[j] - row_lse);
}

__global__ void output_kernel(AttentionShape s, const float* qkv, const float* p, float* out) {
  const int64_t l = s.l, d = s.head_dim();
  DDPM_GRID_STRIDE(idx, s.b * l * s.c) {
    const int64_t ch = idx % s.c, i = (idx / s.c) % l, b = idx / (s.c * l);
    const int64_t h = ch / d, c = ch % d;
    const float* prow = p + ((b * s.heads + h) * l + i) * l;
    float acc = 0.0f;
    for (int64_t j = 0; j < l; ++j) acc += prow[j] * qkv[qkv_index(s, b, j, 2, h) + c];
    out[idx] = acc;
  }
}

// dv[b, j, h*d + c] (+)= sum_i P[i, j] dout[b, i, h*d + c]   (= when not add: GradWrite)
__global__ void dv_kernel(AttentionShape s, const float* p, const float* dout, float* dqkv,
                          bool add) {
  const int64_t l = s.l, d = s.head_dim();
  DDPM_GRID_STRIDE(idx, s.b * l * s.c) {
    const int64_t ch = idx % s.c, j = (idx / s.c) % l, b = idx / (s.c * l);
    const int64_t h = ch / d, c = ch % d;
    const float* pbh = p + (b * s.heads + h) * l * l;
    float acc = 0.0f;
    for (int64_t i = 0; i < l; ++i) acc += pbh[i * l + j] * dout[(b * l + i) * s.c + ch];
    store_grad(dqkv, qkv_index(s, b, j, 2, h) + c, acc, add);
  }
}

// dP[bh, i, j] = dout_i . v_j
__global__ void dp_kernel(AttentionShape s, const float* qkv, const float* dout, float* dp) {
  const int64_t l = s.l, d = s.head_dim();
  DDPM_GRID_STRIDE(idx, s.b * s.heads * l * l) {
    const int64_t j = idx % l, i = (idx / l) % l, bh = idx / (l * l);
    const int64_t b = bh / s.heads, h = bh % s.heads;
    const float* g = dout + (b * l + i) * s.c + h * d;
    const float* v = qkv + qkv_index(s, b, j, 2, h);
    float acc = 0.0f;
    for (int64_t c = 0; c < d; ++c) acc += g[c] * v[c];
    dp[idx] = acc;
  }
}

// One block per row: dS = P (dP - sum_j P dP) * scale, written over dP.
__global__ void ds_rows_kernel(int64_t l, float scale, const float* p, float* dp) {
  __shared__ float scratch[32];
  const float* prow = p + static_cast<int64_t>(blockIdx.x) * l;
  float* drow = dp + static_cast<int64_t>(blockIdx.x) * l;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) dot += prow[j] * drow[j];
  dot = block_sum(dot, scratch);
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) drow[j] = prow[j] * (drow[j] - dot) * scale;
}

// dq[i] (+)= sum_j dS[i, j] k_j  (part 0 from part 1); dk[j] (+)= sum_i dS[i, j] q_i (1 from 0)
template <bool kKeys>
__global__ void dqk_kernel(AttentionShape s, const float* qkv, const float* ds, float* dqkv,
                           bool add) {
  const int64_t l = s.l, d = s.head_dim();
  DDPM_GRID_STRIDE(idx, s.b * l * s.c) {
    const int64_t ch = idx % s.c, t = (idx / s.c) % l, b = idx / (s.c * l);
    const int64_t h = ch / d, c = ch % d;
    const float* dsbh = ds + (b * s.heads + h) * l * l;
    float acc = 0.0f;
    for (int64_t u = 0; u < l; ++u) {
      const float weight = kKeys ? dsbh[u * l + t] : dsbh[t * l + u];
      acc += weight * qkv[qkv_index(s, b, u, kKeys ? 0 : 1, h) + c];
    }
    store_grad(dqkv, qkv_index(s, b, t, kKeys ? 1 : 0, h) + c, acc, add);
  }
}

void probabilities(const AttentionShape& s, const float* qkv, const float* lse_in, float* lse_out,
                   float* p) {
  const float scale = 1.0f / sqrtf(static_cast<float>(s.head_dim()));
  const int64_t rows = s.b * s.heads * s.l;
  DDPM_LAUNCH(scores_kernel, grid_for(rows * s.l), kThreads)(s, qkv, scale, p);
  DDPM_LAUNCH(softmax_rows_kernel, static_cast<unsigned>(rows), kThreads)(s.l, p, lse_in, lse_out);
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse,
                       float* workspace) {
  if (s.b * s.l == 0) return;
  probabilities(s, qkv, nullptr, lse, workspace);
  DDPM_LAUNCH(output_kernel, grid_for(s.b * s.l * s.c), kThreads)(s, qkv, workspace, out);
}

void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv, float* workspace, GradWrite dqkv_write) {
  if (s.b * s.l == 0) return;
  const bool add = dqkv_write == GradWrite::Accumulate;
  const int64_t rows = s.b * s.heads * s.l;
  float* p = workspace;
  float* dp = workspace + rows * s.l;
  probabilities(s, qkv, lse, nullptr, p);
  const unsigned grid_tokens = grid_for(s.b * s.l * s.c);
  DDPM_LAUNCH(dv_kernel, grid_tokens, kThreads)(s, p, dout, dqkv, add);
  DDPM_LAUNCH(dp_kernel, grid_for(rows * s.l), kThreads)(s, qkv, dout, dp);
  DDPM_LAUNCH(ds_rows_kernel, static_cast<unsigned>(rows), kThreads)(
      s.l, 1.0f / sqrtf(static_cast<float>(s.head_dim())), p, dp);
  DDPM_LAUNCH(dqk_kernel<false>, grid_tokens, kThreads)(s, qkv, dp, dqkv, add);
  DDPM_LAUNCH(dqk_kernel<true>, grid_tokens, kThreads)(s, qkv, dp, dqkv, add);
}

}  // namespace ddpm::cuda
