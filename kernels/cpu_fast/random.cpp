#include "kernels/cpu_fast/random.h"

#include "engine/philox.h"

namespace ddpm::cpu_fast {
namespace {

// f(i, keep) for every element i < n, one Philox block per four elements, blocks in parallel.
template <class F>
void for_each_mask_bit(int64_t n, float p, uint64_t seed, uint64_t stream, F f) {
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4 w = philox_block(seed, stream, static_cast<uint64_t>(b));
    for (int64_t k = 0; k < 4 && 4 * b + k < n; ++k) f(4 * b + k, word_to_uniform(w.v[k]) >= p);
  }
}

}  // namespace

void dropout_forward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* x, float* y) {
  const float keep_scale = 1.0f / (1.0f - p);  // as the reference computes it
  for_each_mask_bit(n, p, seed, stream,
                    [&](int64_t i, bool keep) { y[i] = keep ? x[i] * keep_scale : 0.0f; });
}

void dropout_backward(int64_t n, float p, uint64_t seed, uint64_t stream, const float* dy,
                      float* dx) {
  const float keep_scale = 1.0f / (1.0f - p);
  for_each_mask_bit(n, p, seed, stream, [&](int64_t i, bool keep) {
    if (keep) dx[i] += dy[i] * keep_scale;  // may contract to one FMA here: 1 rounding, not 2
  });
}

}  // namespace ddpm::cpu_fast
