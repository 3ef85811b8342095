#include "kernels/cpu/group_norm_bf16.h"

#include <vector>

#include "kernels/bf16.h"
#include "kernels/cpu/group_norm.h"
#include "kernels/cpu/random.h"

namespace ddpm::cpu {

namespace {

std::vector<float> decode(const uint16_t* bits, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = float_from_bf16_bits(bits[i]);
  return out;
}

void encode(const std::vector<float>& values, uint16_t* bits) {
  for (size_t i = 0; i < values.size(); ++i) bits[i] = bf16_bits_from_float(values[i]);
}

int64_t elements(const GroupNormShape& s) { return s.n * s.s * s.c; }

}  // namespace

void group_norm_forward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, uint16_t* y, float* mean, float* rstd, bool silu,
                             const DropoutKeys& dropout) {
  const int64_t n = elements(s);
  const std::vector<float> xf = decode(x, n);
  std::vector<float> yf(static_cast<size_t>(n));
  (silu ? group_norm_silu_forward<float> : group_norm_forward<float>)(
      s, xf.data(), gamma, beta, yf.data(), mean, rstd);
  if (dropout.p > 0)
    dropout_forward<float>(n, dropout.p, dropout.seed, dropout.stream, yf.data(), yf.data());
  encode(yf, y);
}

void group_norm_silu_dh_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd,
                             const uint16_t* dy, uint16_t* dh, const DropoutKeys& dropout) {
  const int64_t n = elements(s);
  const std::vector<float> xf = decode(x, n);
  std::vector<float> dyf = decode(dy, n), dhf(static_cast<size_t>(n));
  if (dropout.p > 0) {
    std::vector<float> kept(static_cast<size_t>(n), 0.0f);  // dropout's backward accumulates
    dropout_backward<float>(n, dropout.p, dropout.seed, dropout.stream, dyf.data(), kept.data());
    dyf.swap(kept);
  }
  group_norm_silu_dh<float>(s, xf.data(), gamma, beta, mean, rstd, dyf.data(), dhf.data());
  encode(dhf, dh);
}

void group_norm_backward_bf16(const GroupNormShape& s, const uint16_t* x, const float* gamma,
                              const float* mean, const float* rstd, const uint16_t* dy,
                              uint16_t* dx, float* dgamma, float* dbeta) {
  const int64_t n = elements(s);
  const std::vector<float> xf = decode(x, n), dyf = decode(dy, n);
  std::vector<float> dxf = dx ? decode(dx, n) : std::vector<float>();
  group_norm_backward<float>(s, xf.data(), gamma, mean, rstd, dyf.data(),
                             dx ? dxf.data() : nullptr, dgamma, dbeta);
  if (dx) encode(dxf, dx);
}

}  // namespace ddpm::cpu
