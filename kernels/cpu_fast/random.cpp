#include "kernels/cpu_fast/random.h"

#include "engine/philox.h"

namespace ddpm::cpu_fast {
namespace {

// Philox blocks a vector of 32-bit lanes holds in one go: 16, one 512-bit register per
// counter word on AVX-512 (two 256-bit ones on AVX2, as the compiler splits it).
constexpr int kLanes = 16;
constexpr int64_t kChunk = 4 * kLanes;  // the elements one call of philox_lanes covers

// words[e] = the word of element 4 first + e, e < kChunk: the blocks first .. first + 15,
// each lane one block. The loop body is philox_block itself, so the bits are the
// reference's; `omp simd` has the compiler run its ten rounds on all lanes at once (the
// 32 x 32 -> 64-bit products as vector multiplies). Block by block, the scalar multiplies
// and their dependency chain left the vector unit idle: the mask of 1M elements took 2.3 ms,
// here 0.36 (`cpu-bench ops`, 2 cores; docs/cpu-path.md).
inline void philox_lanes(uint64_t seed, uint64_t stream, uint64_t first, uint32_t* words) {
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) {
    const Philox4 w = philox_block(seed, stream, first + static_cast<uint64_t>(i));
    for (int k = 0; k < 4; ++k) words[4 * i + k] = w.v[k];
  }
}

// f(i, keep) for every element i < n: chunks of kChunk elements in parallel, each one
// philox_lanes call (the last chunk's lanes past n drawn and unused).
template <class F>
void for_each_mask_bit(int64_t n, float p, uint64_t seed, uint64_t stream, F f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) firstprivate(f)  // f's captures in registers
  for (int64_t c = 0; c < chunks; ++c) {
    alignas(64) uint32_t words[kChunk];
    philox_lanes(seed, stream, static_cast<uint64_t>(c) * kLanes, words);
    const int64_t first = c * kChunk;
    if (n - first >= kChunk) {  // a whole chunk: a loop of known length, which vectorizes
      for (int64_t e = 0; e < kChunk; ++e) f(first + e, word_to_uniform(words[e]) >= p);
    } else {
      for (int64_t e = 0; e < n - first; ++e) f(first + e, word_to_uniform(words[e]) >= p);
    }
  }
}

}  // namespace

void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y) {
  const float keep_scale = 1.0f / (1.0f - p);  // as the reference computes it
  for_each_mask_bit(n, p, seed, stream, [=](int64_t i, bool keep) {
    y[i] = keep ? x[i] * keep_scale : 0.0f;
  });
}

void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy,
                      float* dx) {
  const float keep_scale = 1.0f / (1.0f - p);
  for_each_mask_bit(n, p, seed, stream, [=](int64_t i, bool keep) {
    if (keep) dx[i] += dy[i] * keep_scale;  // may contract to one FMA here: 1 rounding, not 2
  });
}

}  // namespace ddpm::cpu_fast
