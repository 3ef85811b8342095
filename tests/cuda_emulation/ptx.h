// The Ampere GEMM instructions of kernels/cuda/ptx.cuh on the CPU: cp.async, ldmatrix and
// mma.sync m16n8k16 bf16, with the semantics and layouts that file's comment gives from
// the PTX ISA.
//
//   cp.async     queued per thread and performed at wait_group (block.h): the latest moment
//                the hardware may complete it, so reading a stage before waiting for it, or
//                without the __syncthreads after, reads stale data (and ThreadSanitizer sees
//                the write by the issuing thread and the read by another with no barrier
//                between: a race). Traps on unaligned addresses.
//   ldmatrix     a warp collective: every lane gives its row address, every lane reads the
//                32 rows and picks its elements. Traps unless all 32 lanes take part and
//                every row address is 16-byte aligned. Its wavefronts are counted
//                (block.h: cuda_emu::shared_traffic), and so are cp.async's.
//   mma.sync     a warp collective like WMMA's (wmma.h): the lanes' registers are gathered
//                into A (16x16) and B (16x8) by the fragment layout, each lane computes its
//                four elements of D: bf16 products (exact in fp32), summed in fp32 in k order.
// What this cannot prove: a layout misread the same way here and in a kernel passes here
// and fails on a GPU; the GPU tests remain the final word.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"

namespace ddpm::cuda::ptx {

namespace emu_detail {

inline void require_aligned16(const char* op, const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    cuda_emu::trap((std::string(op) + ": address is not 16-byte aligned").c_str());
}

inline uint16_t b16_at(const void* row, int element) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * element, 2);
  return v;
}

inline uint32_t pack(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

inline void ldmatrix(const char* op, uint32_t (&r)[4], const void* row, bool trans) {
  require_aligned16(op, row);
  unsigned lanes = 0;
  const uint64_t* all =
      cuda_emu::warp_collective_begin(op, 0xffffffffu, cuda_emu::to_bits(row), &lanes);
  if (lanes != 0xffffffffu) cuda_emu::trap((std::string(op) + " needs all 32 lanes").c_str());
  const int lane = cuda_emu::lane_id(), g = lane / 4, t = lane % 4;
  if (lane == 0) cuda_emu::count_ldmatrix(all);  // its bank conflicts (block.h)
  for (int q = 0; q < 4; ++q) {
    auto row_of = [&](int i) { return cuda_emu::from_bits<const void*>(all[8 * q + i]); };
    r[q] = trans ? pack(b16_at(row_of(2 * t), g), b16_at(row_of(2 * t + 1), g))
                 : pack(b16_at(row_of(g), 2 * t), b16_at(row_of(g), 2 * t + 1));
  }
  cuda_emu::warp_collective_end();
}

}  // namespace emu_detail

// ptx.cuh's 32-bit shared-window address is the host address here.
using SharedAddress = uintptr_t;
inline SharedAddress shared_address(const void* p) { return reinterpret_cast<SharedAddress>(p); }
inline SharedAddress computed_once(SharedAddress a) { return a; }  // a compiler hint on a GPU

inline void cp_async_16(void* dst, const void* src, bool valid) {
  emu_detail::require_aligned16("cp.async (shared destination)", dst);
  if (valid) emu_detail::require_aligned16("cp.async (global source)", src);
  cuda_emu::async_copy_issue({dst, src, 16, valid ? size_t{16} : size_t{0}});
}

inline void cp_async_16(SharedAddress dst, const void* src, bool valid) {
  cp_async_16(reinterpret_cast<void*>(dst), src, valid);
}

inline void cp_async_commit() { cuda_emu::async_copy_commit(); }

template <int kPending>
inline void cp_async_wait() {
  for (const cuda_emu::AsyncCopy& c : cuda_emu::async_copy_wait(kPending)) {
    if (c.src_bytes > 0) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  emu_detail::ldmatrix("ldmatrix.x4", r, row, false);
}

inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  emu_detail::ldmatrix("ldmatrix.x4.trans", r, row, true);
}

inline void ldmatrix_x4(uint32_t (&r)[4], SharedAddress row) {
  ldmatrix_x4(r, reinterpret_cast<const void*>(row));
}

inline void ldmatrix_x4_trans(uint32_t (&r)[4], SharedAddress row) {
  ldmatrix_x4_trans(r, reinterpret_cast<const void*>(row));
}

// Lane (g, t) = (lane / 4, lane % 4) holds D's rows g, g + 8 by columns 2t, 2t + 1 (d[i]:
// row g + 8 (i / 2), column 2t + i % 2), so it gathers only A's rows g and g + 8 and B's
// columns 2t and 2t + 1. By the fragment layout (ptx.cuh), lane 4g + j holds k = 2j, 2j + 1
// of A's row g in a[0], of row g + 8 in a[1], and k = 2j + 8, 2j + 9 of them in a[2], a[3];
// lane 4n + j holds k = 2j, 2j + 1 of B's column n in b[0] and k = 2j + 8, 2j + 9 in b[1].
// (Gathering all of A and B in every lane, as before, was most of an emulated convolution's
// time.)
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  struct Operands {
    const uint32_t* a;
    const uint32_t* b;
  } mine{a, b};
  unsigned lanes = 0;
  const uint64_t* all = cuda_emu::warp_collective_begin("mma.sync.m16n8k16.bf16", 0xffffffffu,
                                                        cuda_emu::to_bits(&mine), &lanes);
  if (lanes != 0xffffffffu) cuda_emu::trap("mma.sync.m16n8k16 needs all 32 lanes");
  const int lane = cuda_emu::lane_id(), g = lane / 4, t = lane % 4;
  auto half = [](uint32_t r, int h) { return float_from_bf16_bits(uint16_t(r >> (16 * h))); };
  float a_row[2][16], b_col[2][16];  // A's rows g, g + 8; B's columns 2t, 2t + 1; by k
  for (int j = 0; j < 4; ++j) {
    const Operands* row_lane = cuda_emu::from_bits<const Operands*>(all[4 * g + j]);
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h) {
        a_row[r][2 * j + h] = half(row_lane->a[r], h);
        a_row[r][2 * j + 8 + h] = half(row_lane->a[r + 2], h);
      }
    for (int c = 0; c < 2; ++c) {
      const Operands* col_lane = cuda_emu::from_bits<const Operands*>(all[4 * (2 * t + c) + j]);
      for (int h = 0; h < 2; ++h) {
        b_col[c][2 * j + h] = half(col_lane->b[0], h);
        b_col[c][2 * j + 8 + h] = half(col_lane->b[1], h);
      }
    }
  }
  float result[4];
  for (int i = 0; i < 4; ++i) {
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += a_row[i / 2][k] * b_col[i % 2][k];
    result[i] = acc;
  }
  cuda_emu::warp_collective_end();  // the other lanes are done reading our registers
  for (int i = 0; i < 4; ++i) d[i] = result[i];
}

}  // namespace ddpm::cuda::ptx
