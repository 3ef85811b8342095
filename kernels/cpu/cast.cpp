#include "kernels/cpu/cast.h"

#include "kernels/bf16.h"

namespace ddpm::cpu {

namespace {

float load(const float* p, int64_t i) { return p[i]; }
float load(const uint16_t* p, int64_t i) { return float_from_bf16_bits(p[i]); }
void store(float* p, int64_t i, float v) { p[i] = v; }
void store(uint16_t* p, int64_t i, float v) { p[i] = bf16_bits_from_float(v); }

template <class X, class Y>
void axpy_any(int64_t n, float alpha, const X* x, Y* y) {
  for (int64_t i = 0; i < n; ++i) store(y, i, load(y, i) + alpha * load(x, i));
}

}  // namespace

void to_bf16_bits(int64_t n, const float* x, uint16_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_bits_from_float(x[i]);
}
void from_bf16_bits(int64_t n, const uint16_t* x, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_from_bf16_bits(x[i]);
}
void axpy_stored(int64_t n, float alpha, const uint16_t* x, float* y) { axpy_any(n, alpha, x, y); }
void axpy_stored(int64_t n, float alpha, const float* x, uint16_t* y) { axpy_any(n, alpha, x, y); }
void axpy_stored(int64_t n, float alpha, const uint16_t* x, uint16_t* y) {
  axpy_any(n, alpha, x, y);
}

}  // namespace ddpm::cpu
