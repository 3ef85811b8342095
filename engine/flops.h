// The floating-point operations of the engine's matrix products, counted by the ops as they
// run: the numerator of a model FLOP utilisation (MFU = FLOPs per second / the device's peak,
// kernel-bench step). Convolutions, linear layers and attention's two products each count
// 2 FLOPs per multiply-add, in the forward pass and in each product of the backward pass
// (conv and linear: dx and dw; attention: dV, dP, dQ, dK). This is the algorithmic count
// MFU conventionally takes: a flash backward's recomputation of the scores is not counted,
// nor elementwise work, norms, the loss or the optimiser. A replayed CUDA graph runs no op,
// so count an eager step. Any device, any dtype; not per thread.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm {

uint64_t matmul_flops();  // since the process started
void count_matmul_flops(uint64_t flops);

// One product of each op (the forward, or one gradient of the backward).
uint64_t conv2d_flops(const Conv2dShape& s);       // 2 N OH OW Cout KH KW Cin
uint64_t linear_flops(const LinearShape& s);       // 2 M K N
uint64_t attention_flops(const AttentionShape& s);  // 2 B L L C (QK^T, or PV, over all heads)

}  // namespace ddpm
