#include "engine/flops.h"

#include <atomic>

namespace ddpm {

namespace {
std::atomic<uint64_t> g_flops{0};
}  // namespace

uint64_t matmul_flops() { return g_flops.load(std::memory_order_relaxed); }

void count_matmul_flops(uint64_t flops) { g_flops.fetch_add(flops, std::memory_order_relaxed); }

uint64_t conv2d_flops(const Conv2dShape& s) {
  return 2ull * static_cast<uint64_t>(s.n * s.out_h() * s.out_w() * s.c_out) *
         static_cast<uint64_t>(static_cast<int64_t>(s.kh) * s.kw * s.c_in);
}

uint64_t linear_flops(const LinearShape& s) {
  return 2ull * static_cast<uint64_t>(s.m) * static_cast<uint64_t>(s.k) *
         static_cast<uint64_t>(s.n);
}

uint64_t attention_flops(const AttentionShape& s) {
  return 2ull * static_cast<uint64_t>(s.b) * static_cast<uint64_t>(s.l * s.l) *
         static_cast<uint64_t>(s.c);
}

}  // namespace ddpm
