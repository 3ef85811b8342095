// Dropout on the fast CPU path: the reference's mask, bit for bit (element i is kept when
// philox_uniform(seed, stream, i) >= p, kernels/cpu/random.h). The reference computes a whole
// Philox4x32-10 block (four words, ten rounds) for every element and keeps one word. Here
// each block serves the four elements it covers, a quarter of the work, and 16 consecutive
// blocks are drawn at once, one per lane of the vector unit (random.cpp). Dropout was 7.6%
// of the CIFAR-10 model's fast CPU step (perf) with a block per element; `cpu-bench ops`'s
// dropout rows time the two (1M elements, 2 cores): 5.8 ms reference, 0.37 ms here (2.3 ms
// with a block per four elements, drawn one after another).
#pragma once

#include <cstdint>

namespace ddpm::cpu_fast {

// x, y: (n) f32. y = x / (1 - p) where kept, else 0.
void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y);
// dy, dx: (n) f32. dx += dy / (1 - p) where kept (the forward's mask, regenerated).
void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy,
                      float* dx);

}  // namespace ddpm::cpu_fast
