// What the tensor cores do to a sum: one warp's mma.sync on operands you choose, so that a
// test (tests/test_tensor_core_sum.cpp) or a reader can set the device's bits beside a model
// of the instruction (tests/cuda_emulation/tensor_core_sum.h, the CPU emulation's sums).
#pragma once

#include <cstdint>

namespace ddpm::cuda {

// D (16 x 8) = C + A (16 x K) B (K x 8), fp32, by one warp's mma.sync instructions in k
// order, each one's result the next one's accumulator: K / 16 of m16n8k16 on bf16 operands
// (a and b: bf16 bits), or K / 8 of m16n8k8 on TF32 operands (fp32 values of which the
// tensor cores read the top 19 bits). Device pointers, row-major. K a multiple of the
// instruction's, at most 1024. Needs sm_80 or later.
void tensor_core_probe_bf16(const uint16_t* a, const uint16_t* b, const float* c, float* d,
                            int K);
void tensor_core_probe_tf32(const float* a, const float* b, const float* c, float* d, int K);

}  // namespace ddpm::cuda
