// CPU reference kernels for moving values between storage types: fp32 and bf16 (as bits,
// kernels/bf16.h: rounded to nearest, ties to even, when narrowed; exact when widened).
// Accumulation across them computes in fp32 and rounds once, when the sum is stored in bf16:
// how a bf16 tensor's gradient receives each contribution (engine/ops/cast.cpp).
#pragma once

#include <cstdint>

namespace ddpm::cpu {

void to_bf16_bits(int64_t n, const float* x, uint16_t* y);    // y = bf16(x)
void from_bf16_bits(int64_t n, const uint16_t* x, float* y);  // y = x, exactly

// y += alpha x, in fp32; a bf16 y is rounded once per element, after the add.
void axpy_stored(int64_t n, float alpha, const uint16_t* x, float* y);
void axpy_stored(int64_t n, float alpha, const float* x, uint16_t* y);
void axpy_stored(int64_t n, float alpha, const uint16_t* x, uint16_t* y);

}  // namespace ddpm::cpu
