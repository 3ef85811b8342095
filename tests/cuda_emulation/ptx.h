// The Ampere GEMM instructions of kernels/cuda/ptx.cuh on the CPU: cp.async, ldmatrix and
// mma.sync m16n8k16 bf16, with the semantics and layouts that file's comment gives from
// the PTX ISA.
//
//   cp.async     queued per thread and performed at wait_group (block.h): the latest moment
//                the hardware may complete it, so reading a stage before waiting for it, or
//                without the __syncthreads after, reads stale data (and ThreadSanitizer sees
//                the write by the issuing thread and the read by another with no barrier
//                between: a race). Traps on unaligned addresses.
//   ldmatrix     a warp collective: every lane reads the row at its address, the warp
//                exchanges the 32 rows, every lane picks its elements. Orders no memory (a
//                row written by another lane of the warp needs a barrier before). Traps
//                unless all 32 lanes take part and every row address is 16-byte aligned.
//                Its wavefronts are counted (block.h: cuda_emu::shared_traffic), and so are
//                cp.async's.
//   mma.sync     a warp collective like WMMA's (wmma.h): the lanes' registers are copied
//                to every lane (block.h: warp_exchange_registers, which orders no memory),
//                gathered into A (16x16) and B (16x8) by the fragment layout, and each lane
//                computes its four elements of D: bf16 products (exact in fp32), added as
//                the tensor cores add them, in blocks truncated toward zero
//                (tensor_core_sum.h), not by round-to-nearest fp32 adds.
// What this cannot prove: a layout misread the same way here and in a kernel passes here
// and fails on a GPU; the GPU tests remain the final word.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"
#include "tests/cuda_emulation/tensor_core_sum.h"

namespace ddpm::cuda::ptx {

namespace emu_detail {

inline void require_aligned16(const char* op, const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    cuda_emu::trap((std::string(op) + ": address is not 16-byte aligned").c_str());
}

inline uint32_t pack(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Each lane reads its own row, the 16 bytes at its address (the access the sanitizers
// check), and the warp exchanges the rows as registers (with the addresses, for the bank
// count); then each lane picks its elements. Like the hardware's, this ldmatrix orders no
// memory: a row another lane of the warp wrote needs a __syncwarp or __syncthreads between.
inline void ldmatrix(const char* op, uint32_t (&r)[4], const void* row, bool trans) {
  require_aligned16(op, row);
  uint32_t mine[6];  // the row's 8 elements, then its address
  std::memcpy(mine, row, 16);
  const uint64_t address = cuda_emu::to_bits(row);
  std::memcpy(mine + 4, &address, sizeof address);
  uint32_t all[32][6];
  cuda_emu::warp_exchange_registers(op, mine, 6, &all[0][0]);
  const int lane = cuda_emu::lane_id(), g = lane / 4, t = lane % 4;
  if (lane == 0) {  // its bank conflicts (block.h)
    uint64_t addresses[32];
    for (int l = 0; l < 32; ++l) std::memcpy(&addresses[l], all[l] + 4, sizeof(uint64_t));
    cuda_emu::count_ldmatrix(addresses);
  }
  auto element = [&](int row_lane, int e) {  // element e of the row lane row_lane read
    return static_cast<uint16_t>(all[row_lane][e / 2] >> (16 * (e % 2)));
  };
  for (int q = 0; q < 4; ++q)
    r[q] = trans ? pack(element(8 * q + 2 * t, g), element(8 * q + 2 * t + 1, g))
                 : pack(element(8 * q + g, 2 * t), element(8 * q + g, 2 * t + 1));
}

}  // namespace emu_detail

// ptx.cuh's 32-bit shared-window address is the host address here.
using SharedAddress = uintptr_t;
inline SharedAddress shared_address(const void* p) { return reinterpret_cast<SharedAddress>(p); }
inline SharedAddress computed_once(SharedAddress a) { return a; }  // a compiler hint on a GPU

// `at` changes no value: the emulator counts the sectors each kind reads from L2, and those
// an L1 of the block would have served (cuda_emu::CopyReads).
inline void cp_async_16(void* dst, const void* src, bool valid, CacheAt at = CacheAt::L2) {
  emu_detail::require_aligned16("cp.async (shared destination)", dst);
  if (valid) emu_detail::require_aligned16("cp.async (global source)", src);
  cuda_emu::async_copy_issue(
      {dst, src, 16, valid ? size_t{16} : size_t{0}, /*through_l1=*/at == CacheAt::L1});
}

inline void cp_async_16(SharedAddress dst, const void* src, bool valid,
                        CacheAt at = CacheAt::L2) {
  cp_async_16(reinterpret_cast<void*>(dst), src, valid, at);
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
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};  // a lane's registers
  uint32_t all[32][6];
  cuda_emu::warp_exchange_registers("mma.sync.m16n8k16.bf16", mine, 6, &all[0][0]);
  const int lane = cuda_emu::lane_id(), g = lane / 4, t = lane % 4;
  auto half = [](uint32_t r, int h) { return float_from_bf16_bits(uint16_t(r >> (16 * h))); };
  float a_row[2][16], b_col[2][16];  // A's rows g, g + 8; B's columns 2t, 2t + 1; by k
  for (int j = 0; j < 4; ++j) {
    const uint32_t* row_lane = all[4 * g + j];  // its a[0..3]
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h) {
        a_row[r][2 * j + h] = half(row_lane[r], h);
        a_row[r][2 * j + 8 + h] = half(row_lane[r + 2], h);
      }
    for (int c = 0; c < 2; ++c) {
      const uint32_t* col_lane = all[4 * (2 * t + c) + j] + 4;  // its b[0..1]
      for (int h = 0; h < 2; ++h) {
        b_col[c][2 * j + h] = half(col_lane[0], h);
        b_col[c][2 * j + 8 + h] = half(col_lane[1], h);
      }
    }
  }
  for (int i = 0; i < 4; ++i)
    d[i] = cuda_emu::tensor_core_dot(d[i], a_row[i / 2], b_col[i % 2], 16, cuda_emu::kBf16Sum);
}

// m16n8k8 .tf32: lane (g, t) gathers A's rows g and g + 8 (lane 4g + j holds k = j in a[0]
// and a[1], k = j + 4 in a[2] and a[3]) and B's columns 2t, 2t + 1 (lane 4n + j holds k = j
// in b[0], j + 4 in b[1]). The tensor cores read each register as TF32, ignoring its low 13
// bits: so does this, so that a kernel that does not round its operands first truncates
// here as it would on a GPU.
inline void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  uint32_t all[32][6];
  cuda_emu::warp_exchange_registers("mma.sync.m16n8k8.tf32", mine, 6, &all[0][0]);
  const int lane = cuda_emu::lane_id(), g = lane / 4, t = lane % 4;
  auto tf32 = [](uint32_t r) {
    r &= 0xffffe000u;
    float f;
    std::memcpy(&f, &r, 4);
    return f;
  };
  float a_row[2][8], b_col[2][8];  // A's rows g, g + 8; B's columns 2t, 2t + 1; by k
  for (int j = 0; j < 4; ++j) {
    for (int r = 0; r < 2; ++r) {
      a_row[r][j] = tf32(all[4 * g + j][r]);
      a_row[r][j + 4] = tf32(all[4 * g + j][r + 2]);
    }
    for (int c = 0; c < 2; ++c) {
      b_col[c][j] = tf32(all[4 * (2 * t + c) + j][4]);
      b_col[c][j + 4] = tf32(all[4 * (2 * t + c) + j][5]);
    }
  }
  for (int i = 0; i < 4; ++i)
    d[i] = cuda_emu::tensor_core_dot(d[i], a_row[i / 2], b_col[i % 2], 8, cuda_emu::kTf32Sum);
}

}  // namespace ddpm::cuda::ptx
