// Dropout on the fast CPU path: the reference's mask, bit for bit (element i is kept when
// philox_uniform(seed, stream, i) >= p, kernels/cpu/random.h), drawn four elements per
// Philox call. The reference computes a whole Philox4x32-10 block (four words, ten rounds)
// for every element and keeps one word; here each block serves the four elements it covers,
// a quarter of the work. Dropout was 7.6% of the CIFAR-10 model's fast CPU step (perf).
#pragma once

#include <cstdint>

namespace ddpm::cpu_fast {

// x, y: (n) f32. y = x / (1 - p) where kept, else 0.
void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y);
// dy, dx: (n) f32. dx += dy / (1 - p) where kept (the forward's mask, regenerated).
void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy,
                      float* dx);

}  // namespace ddpm::cpu_fast
