// CUDA kernels for moving values between storage types, same contracts as kernels/cpu/cast.h
// (fp32 <-> bf16 bits; accumulation in fp32, rounded once when stored in bf16). The
// narrowing fp32 -> bf16 is elementwise.cuh's to_bf16_bits.
#pragma once

#include <cstdint>

namespace ddpm::cuda {

void from_bf16_bits(int64_t n, const uint16_t* x, float* y);
void axpy_stored(int64_t n, float alpha, const uint16_t* x, float* y);
void axpy_stored(int64_t n, float alpha, const float* x, uint16_t* y);
void axpy_stored(int64_t n, float alpha, const uint16_t* x, uint16_t* y);

}  // namespace ddpm::cuda
