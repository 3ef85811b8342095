#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"

namespace ddpm::cpu {

namespace {

// P (L x L) = softmax rows of q k^T * scale. Forward: lse_in is null and the row
// log-sum-exps are written to lse_out. Backward: the saved lse_in is used to recompute P.
template <class T>
void scores_to_probs(const AttentionShape& s, const T* q, const T* k, T scale, const T* lse_in,
                     T* lse_out, T* p) {
  const int64_t l = s.l, ld = 3 * s.c;
  std::fill(p, p + l * l, T(0));
  gemm_acc<T>(false, true, l, l, s.head_dim(), scale, q, ld, k, ld, p, l);
  for (int64_t i = 0; i < l; ++i) {
    T* row = p + i * l;
    T lse;
    if (lse_in) {
      lse = lse_in[i];
    } else {
      const T mx = *std::max_element(row, row + l);
      T sum = 0;
      for (int64_t j = 0; j < l; ++j) sum += std::exp(row[j] - mx);
      lse = mx + std::log(sum);
      lse_out[i] = lse;
    }
    for (int64_t j = 0; j < l; ++j) row[j] = std::exp(row[j] - lse);
  }
}

// Under s.bf16_probs, x (n values) rounded to bf16 in place (float only: the op sets the flag
// for f32 tensors).
template <class T>
void round_probs(const AttentionShape& s, T* x, int64_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (s.bf16_probs) round_to_bf16(n, x, x);
}

}  // namespace

template <class T>
void attention_forward(const AttentionShape& s, const T* qkv, T* out, T* lse) {
  const int64_t d = s.head_dim(), l = s.l, ld = 3 * s.c;
  const T scale = T(1) / std::sqrt(static_cast<T>(d));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < s.b * s.heads; ++bh) {
    const int64_t b = bh / s.heads, h = bh % s.heads;
    std::vector<T> p(static_cast<size_t>(l * l));
    const T* q = qkv + b * l * ld + h * d;
    scores_to_probs<T>(s, q, q + s.c, scale, nullptr, lse + bh * l, p.data());
    round_probs(s, p.data(), l * l);
    T* o = out + b * l * s.c + h * d;
    for (int64_t i = 0; i < l; ++i) std::fill(o + i * s.c, o + i * s.c + d, T(0));
    gemm_acc<T>(false, false, l, d, l, T(1), p.data(), l, q + 2 * s.c, ld, o, s.c);
  }
}

template <class T>
void attention_backward(const AttentionShape& s, const T* qkv, const T* lse, const T* dout,
                        T* dqkv) {
  const int64_t d = s.head_dim(), l = s.l, ld = 3 * s.c;
  const T scale = T(1) / std::sqrt(static_cast<T>(d));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < s.b * s.heads; ++bh) {
    const int64_t b = bh / s.heads, h = bh % s.heads;
    std::vector<T> p(static_cast<size_t>(l * l)), dp(static_cast<size_t>(l * l), T(0));
    const T* q = qkv + b * l * ld + h * d;
    const T* k = q + s.c;
    const T* v = q + 2 * s.c;
    const T* dO = dout + b * l * s.c + h * d;
    T* dq = dqkv + b * l * ld + h * d;
    T* dk = dq + s.c;
    T* dv = dq + 2 * s.c;
    scores_to_probs<T>(s, q, k, scale, lse + bh * l, nullptr, p.data());
    gemm_acc<T>(false, true, l, l, d, T(1), dO, s.c, v, ld, dp.data(), l);       // dP = dO v^T
    for (int64_t i = 0; i < l; ++i) {                                           // dS, in dp
      T* pr = p.data() + i * l;
      T* dpr = dp.data() + i * l;
      T dot = 0;
      for (int64_t j = 0; j < l; ++j) dot += pr[j] * dpr[j];
      for (int64_t j = 0; j < l; ++j) dpr[j] = pr[j] * (dpr[j] - dot) * scale;
    }
    round_probs(s, p.data(), l * l);  // bf16: P and dS as product operands, once dS is made
    round_probs(s, dp.data(), l * l);
    gemm_acc<T>(true, false, l, d, l, T(1), p.data(), l, dO, s.c, dv, ld);      // dv += P^T dO
    gemm_acc<T>(false, false, l, d, l, T(1), dp.data(), l, k, ld, dq, ld);     // dq += dS k
    gemm_acc<T>(true, false, l, d, l, T(1), dp.data(), l, q, ld, dk, ld);      // dk += dS^T q
  }
}

template void attention_forward<float>(const AttentionShape&, const float*, float*, float*);
template void attention_forward<double>(const AttentionShape&, const double*, double*, double*);
template void attention_backward<float>(const AttentionShape&, const float*, const float*,
                                        const float*, float*);
template void attention_backward<double>(const AttentionShape&, const double*, const double*,
                                         const double*, double*);

}  // namespace ddpm::cpu
