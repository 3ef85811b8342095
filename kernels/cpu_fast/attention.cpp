#include "kernels/cpu_fast/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu_fast/fast_exp.h"
#include "kernels/cpu_fast/gemm.h"

namespace ddpm::cpu_fast {

namespace {

// S = scale q k^T for one head: (L x L) row-major in `out`.
void scores(const AttentionShape& s, const float* q, const float* k, float scale, float* out) {
  const int64_t l = s.l, ld = 3 * s.c;
  sgemm(false, true, l, l, s.head_dim(), scale, q, ld, k, ld, 0.0f, out, l);
}

// row[j] = e^(row[j] - shift), j < n; returns their sum. Out of line so the loop vectorises
// (inside the lambdas below GCC could not prove the row and the captured sizes apart).
float exp_shifted(float* row, int64_t n, float shift) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    row[j] = fast_exp(row[j] - shift);
    sum += row[j];
  }
  return sum;
}

// Runs body(pair, S, dP) for every (batch, head) pair; S and dP are the thread's L x L buffers.
template <class Body>
void for_each_head(const AttentionShape& s, bool two_buffers, Body body) {
  const int64_t pairs = s.b * s.heads, ll = s.l * s.l;
  const bool across = pairs >= omp_get_max_threads();
#pragma omp parallel if (across)
  {
    std::vector<float> buffers(static_cast<size_t>(ll * (two_buffers ? 2 : 1)));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < pairs; ++p) body(p, buffers.data(), buffers.data() + ll);
  }
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* qkv, float* out, float* lse) {
  const int64_t l = s.l, c = s.c, d = s.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for_each_head(s, false, [&](int64_t p, float* sc, float*) {
    const int64_t b = p / s.heads, h = p % s.heads;
    const float* q = qkv + b * l * 3 * c + h * d;
    scores(s, q, q + c, scale, sc);
    for (int64_t i = 0; i < l; ++i) {
      float* row = sc + i * l;
      float m = row[0];
#pragma omp simd reduction(max : m)
      for (int64_t j = 1; j < l; ++j) m = std::max(m, row[j]);
      const float sum = exp_shifted(row, l, m);
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j < l; ++j) row[j] *= inv;
      lse[p * l + i] = m + std::log(sum);
    }
    if (s.bf16_probs) cpu::round_to_bf16(l * l, sc, sc);  // P as an operand
    sgemm(false, false, l, d, l, 1.0f, sc, l, q + 2 * c, 3 * c, 0.0f, out + b * l * c + h * d, c);
  });
}

void attention_backward(const AttentionShape& s, const float* qkv, const float* lse,
                        const float* dout, float* dqkv) {
  const int64_t l = s.l, c = s.c, d = s.head_dim();
  const int64_t ld = 3 * c;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for_each_head(s, true, [&](int64_t p, float* prob, float* dp) {
    const int64_t b = p / s.heads, h = p % s.heads;
    const float* q = qkv + b * l * 3 * c + h * d;
    const float *k = q + c, *v = q + 2 * c, *g = dout + b * l * c + h * d;
    float* dq = dqkv + b * l * 3 * c + h * d;
    float *dk = dq + c, *dv = dq + 2 * c;
    scores(s, q, k, scale, prob);
    for (int64_t i = 0; i < l; ++i) exp_shifted(prob + i * l, l, lse[p * l + i]);  // P from the LSE
    // dP = dout v^T
    sgemm(false, true, l, l, d, 1.0f, g, c, v, ld, 0.0f, dp, l);
    for (int64_t i = 0; i < l; ++i) {  // dS = P (dP - rowsum(P dP)) scale, over dP
      const float* pr = prob + i * l;
      float* dr = dp + i * l;
      float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
      for (int64_t j = 0; j < l; ++j) delta += pr[j] * dr[j];
#pragma omp simd
      for (int64_t j = 0; j < l; ++j) dr[j] = pr[j] * (dr[j] - delta) * scale;
    }
    if (s.bf16_probs) {  // P and dS as operands, once dS is made from the fp32 P
      cpu::round_to_bf16(l * l, prob, prob);
      cpu::round_to_bf16(l * l, dp, dp);
    }
    // dv += P^T dout;  dq += dS k;  dk += dS^T q
    sgemm(true, false, l, d, l, 1.0f, prob, l, g, c, 1.0f, dv, ld);
    sgemm(false, false, l, d, l, 1.0f, dp, l, k, ld, 1.0f, dq, ld);
    sgemm(true, false, l, d, l, 1.0f, dp, l, q, ld, 1.0f, dk, ld);
  });
}

}  // namespace ddpm::cpu_fast
