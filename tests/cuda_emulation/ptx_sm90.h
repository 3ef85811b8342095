// Hopper's wgmma instructions of kernels/cuda/ptx_sm90.cuh on the CPU, with the semantics
// and layouts that file's comment gives from the PTX ISA.
//
//   wgmma.mma_async  checked at issue as a warp collective (all 32 lanes, the same
//                    descriptors and accumulate flag in every lane, a whole warpgroup in the
//                    block), then queued per thread (block.h: async_mma_issue) and performed
//                    at wait_group: each warp then computes its 16 rows of the 64 (rows
//                    16 (warp % 4) + ...), reading A and B from shared memory through the
//                    descriptors, every product exact in fp32 and summed onto the
//                    accumulator in k order. So shared memory overwritten, or accumulators
//                    read, before the wait give wrong numbers here, as they may on a GPU;
//                    and a cp.async into the shared memory a product in flight reads traps
//                    (block.h), since on a GPU the copy may land first. Shapes m64n128k16
//                    and m64n64k16; at n = 64 also the register form, A's fragments
//                    gathered from the warp's lanes at issue (a lane whose A registers
//                    hold other values at the wait traps: the instruction owns them).
//   descriptors      the start address field holds the offset from the block's dynamic
//                    shared memory (the emulation's shared window); only the 128-byte swizzle
//                    with base offset 0 is implemented (what ptx_sm90.cuh uses), in both of
//                    its layouts (the trans bits: K-major, and MN-major with its panels at
//                    the leading byte offset), and a start
//                    whose address bits 7-9 are not 0 traps: the hardware would need the
//                    base offset field. The swizzle is applied to host address bits 4-6 from
//                    bits 7-9, so a kernel's 1024-byte alignment of its tiles (done on what
//                    shared_address() gives, here the host address) is what makes the
//                    pattern match.
//   fences           wgmma.fence, fence.proxy.async and fence.mbarrier_init are no-ops: the
//                    emulation has one proxy, and performing a product at its wait is the
//                    latest the hardware may. A kernel missing one passes here and may fail
//                    on a GPU.
//   mbarrier         block.h's transaction barriers (phases, arrivals, bytes); a wait that
//                    cannot complete lets the block's other threads run, and traps when none
//                    makes progress.
//   bulk tensor copy cp.async.bulk.tensor.2d and .3d from a map of tensor_map.h's encoder,
//                    and .4d in im2col mode (an NHWC tensor's pixels by a filter's base):
//                    queued on its mbarrier at issue (its destination checked against the
//                    products in flight), performed at the first wait on that barrier: each
//                    row of the box read from the tensor, zeros where it lies outside, and
//                    stored in 16-byte chunks at their swizzled place (the 128-byte swizzle:
//                    address bits 4-6 XORed with 7-9, as wgmma reads). The destination must
//                    be 128-byte aligned, and 1024-byte under the 128-byte swizzle (what the
//                    engine's tiles keep, and what the descriptors' base offset of 0 needs).
// What this cannot prove: a layout misread the same way here and in a kernel passes here and
// fails on a GPU; the GPU tests remain the final word.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"
#include "tests/cuda_emulation/runtime.h"
#include "tests/cuda_emulation/tensor_map.h"
#include "tests/cuda_emulation/tensor_core_sum.h"

namespace ddpm::cuda::ptx {

namespace emu_sm90 {

constexpr int kRegisterWordsForWgmma = 7;  // the register form's: b, the flag, A's four

inline uintptr_t shared_base() {
  return reinterpret_cast<uintptr_t>(cuda_emu::dynamic_shared_memory());
}

// What a Sw128 descriptor says, decoded: the start as a host address, the byte offsets.
struct Operand {
  uintptr_t start = 0, leading = 0, stride = 0;
};

inline Operand decode(uint64_t desc, const char* which) {
  const uint64_t swizzle = desc >> 62, base_offset = (desc >> 49) & 7;
  if (swizzle != Sw128::kSwizzle128 || base_offset != 0)
    cuda_emu::trap((std::string("wgmma: descriptor of ") + which +
                    ": only the 128-byte swizzle with base offset 0 is emulated")
                       .c_str());
  Operand o;
  o.start = shared_base() + ((desc & 0x3FFF) << 4);
  o.leading = ((desc >> 16) & 0x3FFF) << 4;
  o.stride = ((desc >> 32) & 0x3FFF) << 4;
  if ((o.start >> 7) & 7)
    cuda_emu::trap((std::string("wgmma: descriptor of ") + which +
                    " starts past the first row of a 1024-byte swizzle atom (the hardware "
                    "would need the base offset)")
                       .c_str());
  return o;
}

// Where element (mn, k) of an operand is in the canonical layout, before the swizzle:
// K-major, row mn of 128 bytes (atoms of 8 rows `stride` apart); MN-major, row k of 64 mn
// (atoms of 8 rows of k `stride` apart, panels of 64 mn `leading` apart).
inline uintptr_t logical_address(const Operand& o, Major major, int mn, int k) {
  if (major == Major::K) return o.start + (mn / 8) * o.stride + (mn % 8) * 128 + 2 * k;
  return o.start + (mn / 64) * o.leading + (k / 8) * o.stride + (k % 8) * 128 + 2 * (mn % 64);
}

// Element (mn, k) of a 128-byte-swizzled operand: bits 4-6 of its address XORed with 7-9.
inline float element(const Operand& o, Major major, int mn, int k) {
  const uintptr_t logical = logical_address(o, major, mn, k);
  const uintptr_t physical = logical ^ (((logical >> 7) & 7) << 4);
  uint16_t bits;
  std::memcpy(&bits, reinterpret_cast<const void*>(physical), 2);
  return float_from_bf16_bits(bits);
}

// The whole atoms an operand of `rows` (m or n) by 16 (k) touches: [begin, end) ranges.
inline std::vector<std::pair<uintptr_t, uintptr_t>> atoms_read(const Operand& o, Major major,
                                                              int rows) {
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  const uintptr_t first = o.start & ~uintptr_t{127};
  if (major == Major::K) {  // rows / 8 atoms, stride apart: one range if contiguous
    ranges.push_back({first, first + (rows / 8 - 1) * o.stride + 1024});
  } else {  // per panel, the two atoms of k16
    for (int p = 0; p < rows / 64; ++p)
      ranges.push_back({first + p * o.leading, first + p * o.leading + o.stride + 1024});
  }
  return ranges;
}

}  // namespace emu_sm90

inline uint64_t sw128_descriptor(SharedAddress start, uint32_t leading_bytes,
                                 uint32_t stride_bytes) {
  const uintptr_t base = emu_sm90::shared_base();
  if (start < base || start - base >= (uintptr_t{1} << 18))
    cuda_emu::trap("wgmma descriptor: the address is not in the block's dynamic shared memory");
  return (start - base) >> 4 | Sw128::fields(leading_bytes, stride_bytes);
}

inline void wgmma_fence() {}
template <int kCount>
inline void wgmma_fence_operands(float (&)[kCount]) {}  // a compiler hint on a GPU
template <int kCount>
inline void wgmma_fence_operands(uint32_t (&)[kCount]) {}
inline void fence_proxy_async_shared() {}
inline void wgmma_commit_group() { cuda_emu::async_mma_commit(); }

template <int kPending>
inline void wgmma_wait_group() {
  for (const cuda_emu::AsyncMma& product : cuda_emu::async_mma_wait(kPending)) product.perform();
}

inline void mbarrier_init(SharedAddress bar, unsigned arrivals) {
  cuda_emu::mbarrier_init(reinterpret_cast<void*>(bar), arrivals);
}
inline void fence_mbarrier_init() {}
inline void mbarrier_arrive_expect_tx(SharedAddress bar, uint32_t bytes) {
  cuda_emu::mbarrier_arrive_expect_tx(reinterpret_cast<void*>(bar), bytes);
}
inline void mbarrier_arrive(SharedAddress bar) {
  cuda_emu::mbarrier_arrive(reinterpret_cast<void*>(bar));
}
inline void mbarrier_wait(SharedAddress bar, unsigned parity) {
  while (!cuda_emu::mbarrier_try_wait_parity(reinterpret_cast<void*>(bar), parity)) {
  }
}

namespace emu_sm90 {

// What every bulk tensor copy checks (a map an encoder made, of the copy's rank and mode, no
// interleave, element strides of 1, no swizzle or the 128-byte one on rows of 128 bytes,
// the destination aligned for it), and the map's fields.
inline cuda_emu::TensorMapFields checked_map(const CUtensorMap* map, uint32_t rank, bool im2col,
                                             SharedAddress dst) {
  const cuda_emu::TensorMapFields* found = cuda_emu::tensor_map_fields(map);
  if (found == nullptr)
    cuda_emu::trap("cp.async.bulk.tensor: the tensor map was not made by cuTensorMapEncodeTiled "
                   "or cuTensorMapEncodeIm2col");
  const cuda_emu::TensorMapFields f = *found;
  if (f.im2col != im2col)
    cuda_emu::trap(im2col ? "cp.async.bulk.tensor.im2col: the tensor map is a tiled one"
                          : "cp.async.bulk.tensor (tiled): the tensor map is an im2col one");
  if (f.rank != rank) {
    const std::string why = "cp.async.bulk.tensor." + std::to_string(rank) +
                            "d: the tensor map is of rank " + std::to_string(f.rank);
    cuda_emu::trap(why.c_str());
  }
  if (f.interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
    cuda_emu::trap("cp.async.bulk.tensor: interleaved maps are not emulated");
  for (uint32_t i = 0; i < rank; ++i)
    if (f.element_strides[i] != 1)
      cuda_emu::trap("cp.async.bulk.tensor: element strides other than 1 are not emulated");
  const bool swizzled = f.swizzle == CU_TENSOR_MAP_SWIZZLE_128B;
  const size_t row_bytes = size_t{f.box[0]} * f.element_bytes;
  if (f.swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && !(swizzled && row_bytes == 128))
    cuda_emu::trap("cp.async.bulk.tensor: of the swizzles only the 128-byte one on rows of 128 "
                   "bytes is emulated");
  if (dst % (swizzled ? 1024 : 128) != 0)
    cuda_emu::trap(swizzled ? "cp.async.bulk.tensor: a 128-byte-swizzled box must land on a "
                              "1024-byte boundary of shared memory (a whole swizzle atom)"
                            : "cp.async.bulk.tensor: the destination must be 128-byte aligned");
  return f;
}

// Row r of a box (row_bytes from `row`) stored at dst in 16-byte chunks, each at its
// swizzled place under the 128-byte swizzle.
inline void store_box_row(SharedAddress dst, size_t r, const unsigned char* row, size_t row_bytes,
                          bool swizzled) {
  const uintptr_t row_start = dst + r * row_bytes;
  for (size_t chunk = 0; chunk < row_bytes / 16; ++chunk) {
    const uintptr_t logical = row_start + 16 * chunk;
    const uintptr_t physical = swizzled ? logical ^ (((logical >> 7) & 7) << 4) : logical;
    std::memcpy(reinterpret_cast<void*>(physical), row + 16 * chunk, 16);
  }
}

// `count` elements of the tensor's contiguous dimension from `first` (those inside [0, size)
// copied from `src`, the element at index 0; the rest left as they are in `row`, zeros).
inline void copy_inside(unsigned char* row, const unsigned char* src, int64_t first,
                        int64_t count, int64_t size, uint32_t element_bytes) {
  const int64_t x0 = std::max<int64_t>(first, 0), x1 = std::min<int64_t>(first + count, size);
  if (x0 >= x1) return;
  const size_t bytes = static_cast<size_t>(x1 - x0) * element_bytes;
  if (!cuda_emu::device_accessible(src + x0 * element_bytes, bytes))
    cuda_emu::trap("cp.async.bulk.tensor: the tensor map's rows lie outside any device "
                   "allocation");
  std::memcpy(row + (x0 - first) * element_bytes, src + x0 * element_bytes, bytes);
}

// cp.async.bulk.tensor.{rank}d (tiled): the box of `map` at `coords` (rank of them, the
// contiguous dimension's first), its rows (box[0] elements each) stored one after another,
// swizzled.
inline void tma_load(SharedAddress dst, const CUtensorMap* map, const int* coords, uint32_t rank,
                     SharedAddress bar) {
  if (rank > 3) cuda_emu::trap("cp.async.bulk.tensor: ranks above 3 are not emulated");
  const cuda_emu::TensorMapFields f = checked_map(map, rank, false, dst);
  const bool swizzled = f.swizzle == CU_TENSOR_MAP_SWIZZLE_128B;
  const size_t row_bytes = size_t{f.box[0]} * f.element_bytes;
  int at[3] = {0, 0, 0};
  uint32_t box[3] = {1, 1, 1};
  int64_t dims[3] = {1, 1, 1}, strides[3] = {0, 0, 0};  // strides: bytes, dimensions 1 and 2
  for (uint32_t i = 0; i < rank; ++i) {
    at[i] = coords[i];
    box[i] = f.box[i];
    dims[i] = static_cast<int64_t>(f.dims[i]);
    if (i > 0) strides[i] = static_cast<int64_t>(f.strides[i - 1]);
  }
  cuda_emu::BulkCopy copy;
  copy.dst = reinterpret_cast<void*>(dst);
  copy.bytes = row_bytes * box[1] * box[2];
  copy.perform = [f, dst, at, box, dims, strides, swizzled, row_bytes] {
    unsigned char row[256 * 8];  // a box row: at most 256 elements of 8 bytes
    for (uint32_t i2 = 0; i2 < box[2]; ++i2) {
      for (uint32_t i1 = 0; i1 < box[1]; ++i1) {
        std::memset(row, 0, row_bytes);
        const int64_t y = int64_t{at[1]} + i1, z = int64_t{at[2]} + i2;
        if (y >= 0 && y < dims[1] && z >= 0 && z < dims[2])
          copy_inside(row, f.address + z * strides[2] + y * strides[1], at[0], box[0], dims[0],
                      f.element_bytes);
        store_box_row(dst, size_t{i2} * box[1] + i1, row, row_bytes, swizzled);
      }
    }
  };
  cuda_emu::mbarrier_bulk_copy(reinterpret_cast<void*>(bar), std::move(copy));
}

// cp.async.bulk.tensor.{rank}d...im2col (PTX ISA, "Tensor im2col mode"): `coords` are the
// channel (the contiguous dimension), the filter's base in the spatial dimensions (W, H, D:
// rank - 2 of them) and the image n; `offsets` (rank - 2, W first) are added to the base.
// The box is the map's pixels a column (box[1]) rows of its channels a pixel (box[0]): row p
// is the p-th base position from coords, walking W inside the bounding box (lower .. size - 1
// + upper along each spatial dimension), then H, then D, then n, its channels read at base +
// offsets; elements outside the tensor are zeros. The first base must lie in the bounding
// box (the ISA's rule; a trap here).
inline void tma_load_im2col(SharedAddress dst, const CUtensorMap* map, const int* coords,
                            const uint16_t* offsets, uint32_t rank, SharedAddress bar) {
  if (rank != 4) cuda_emu::trap("cp.async.bulk.tensor.im2col: only rank 4 (NHWC) is emulated");
  const cuda_emu::TensorMapFields f = checked_map(map, rank, true, dst);
  const bool swizzled = f.swizzle == CU_TENSOR_MAP_SWIZZLE_128B;
  const size_t row_bytes = size_t{f.box[0]} * f.element_bytes;
  int64_t lo[2], hi[2];  // the bounding box along W and H
  for (int i = 0; i < 2; ++i) {
    lo[i] = f.lower[i];
    hi[i] = static_cast<int64_t>(f.dims[1 + i]) - 1 + f.upper[i];
    if (coords[1 + i] < lo[i] || coords[1 + i] > hi[i])
      cuda_emu::trap("cp.async.bulk.tensor.im2col: the filter's base lies outside the bounding "
                     "box");
  }
  const int at[4] = {coords[0], coords[1], coords[2], coords[3]};
  const int off[2] = {offsets[0], offsets[1]};
  cuda_emu::BulkCopy copy;
  copy.dst = reinterpret_cast<void*>(dst);
  copy.bytes = row_bytes * f.box[1];
  copy.perform = [f, dst, at, off, lo, hi, swizzled, row_bytes] {
    unsigned char row[256 * 8];
    int64_t w = at[1], h = at[2], n = at[3];
    for (uint32_t p = 0; p < f.box[1]; ++p) {
      std::memset(row, 0, row_bytes);
      const int64_t x = w + off[0], y = h + off[1];
      if (x >= 0 && x < static_cast<int64_t>(f.dims[1]) && y >= 0 &&
          y < static_cast<int64_t>(f.dims[2]) && n >= 0 && n < static_cast<int64_t>(f.dims[3]))
        copy_inside(row, f.address + n * f.strides[2] + y * f.strides[1] + x * f.strides[0],
                    at[0], f.box[0], static_cast<int64_t>(f.dims[0]), f.element_bytes);
      store_box_row(dst, p, row, row_bytes, swizzled);
      if (++w > hi[0]) {  // the next base: along W, then H, then the next image
        w = lo[0];
        if (++h > hi[1]) {
          h = lo[1];
          ++n;
        }
      }
    }
  };
  cuda_emu::mbarrier_bulk_copy(reinterpret_cast<void*>(bar), std::move(copy));
}

}  // namespace emu_sm90

inline void tma_load_2d(SharedAddress dst, const CUtensorMap* map, int c0, int c1,
                        SharedAddress bar) {
  const int coords[2] = {c0, c1};
  emu_sm90::tma_load(dst, map, coords, 2, bar);
}
inline void tma_load_3d(SharedAddress dst, const CUtensorMap* map, int c0, int c1, int c2,
                        SharedAddress bar) {
  const int coords[3] = {c0, c1, c2};
  emu_sm90::tma_load(dst, map, coords, 3, bar);
}
inline void tma_load_im2col_4d(SharedAddress dst, const CUtensorMap* map, int c, int w, int h,
                               int n, uint16_t offset_w, uint16_t offset_h, SharedAddress bar) {
  const int coords[4] = {c, w, h, n};
  const uint16_t offsets[2] = {offset_w, offset_h};
  emu_sm90::tma_load_im2col(dst, map, coords, offsets, 4, bar);
}

namespace emu_sm90 {

// A product's A: a descriptor of shared memory laid out `major`, or (the register form) the
// warp's fragments, gathered from its lanes at issue: regs[lane] = the lane's a[0..3],
// ptx_sm90.cuh's layout (rows g and g + 8 of the warp's 16, k 2t.. and 2t + 8..).
struct OperandA {
  bool in_registers = false;
  uint64_t desc = 0;
  Major major = Major::K;
  uint32_t regs[32][4] = {};
  // Element (row r of warp `warp`'s 16, k) of the 64 x 16 operand.
  float at(const Operand& shared, int warp, int r, int k) const {
    if (!in_registers) return element(shared, major, 16 * warp + r, k);
    const uint32_t pair = regs[4 * (r % 8) + (k % 8) / 2][r / 8 + 2 * (k / 8)];
    return float_from_bf16_bits(static_cast<uint16_t>(k % 2 ? pair >> 16 : pair & 0xFFFFu));
  }
};

// d (64 x N over the warpgroup, N / 2 floats a thread) = A b + (accumulate ? d : 0), b laid
// out kB, performed at the wait. `mine`: the calling lane's operand words, of which the first
// `uniform` (the descriptors and the accumulate flag) must be the same in every lane of the
// warp; with A in registers, its four words follow (a_regs: where the lane keeps them, which
// must hold the same values at the wait: the instruction owns them until then).
template <int N>
void issue_wgmma(float (&d)[N / 2], OperandA a_operand, const uint32_t* a_regs, uint64_t b,
                 Major kB, bool accumulate, const uint32_t* mine, int words, int uniform) {
  static_assert(N % 64 == 0 && N <= 128, "the emulated shapes: n 64 and 128");
  uint32_t all[32 * kRegisterWordsForWgmma];  // lane l's words at l * words
  cuda_emu::warp_exchange_registers("wgmma.mma_async", mine, words, all);
  for (int lane = 0; lane < 32; ++lane) {
    const uint32_t* theirs = all + lane * words;
    if (std::memcmp(theirs, mine, uniform * sizeof(uint32_t)) != 0)
      cuda_emu::trap("wgmma.mma_async: the lanes of a warp give different operands");
    if (a_operand.in_registers) std::memcpy(a_operand.regs[lane], theirs + uniform, 16);
  }
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  if ((tid / 128 + 1) * 128 > threads)
    cuda_emu::trap("wgmma.mma_async: the block's threads do not make whole warpgroups of 128");
  const int warp = static_cast<int>(tid / 32 % 4), g = static_cast<int>(tid % 32 / 4),
            t = static_cast<int>(tid % 4);
  uint32_t a_at_issue[4] = {};
  if (a_regs) std::memcpy(a_at_issue, a_regs, sizeof a_at_issue);
  cuda_emu::AsyncMma product;
  if (tid % 32 == 0) {  // what the warp's product reads: A's 64 rows, B's N, whole atoms
    if (!a_operand.in_registers)
      product.reads = atoms_read(decode(a_operand.desc, "A"), a_operand.major, 64);
    for (const auto& range : atoms_read(decode(b, "B"), kB, N)) product.reads.push_back(range);
  }
  product.perform = [&d, a_operand, a_regs, a_at_issue, b, kB, accumulate, warp, g, t] {
    // every lane of the warp performs its products in the same order (its waits mirror the
    // issues), so a collective here keeps the warp together as the instruction does
    unsigned at_wait = 0;
    cuda_emu::warp_collective_begin("wgmma.wait_group", 0xffffffffu, 0, &at_wait);
    if (at_wait != 0xffffffffu) cuda_emu::trap("wgmma.wait_group needs all 32 lanes of the warp");
    if (a_regs && std::memcmp(a_regs, a_at_issue, sizeof a_at_issue) != 0)
      cuda_emu::trap("wgmma.mma_async: A's registers were written before the wait");
    const Operand A = a_operand.in_registers ? Operand{} : decode(a_operand.desc, "A");
    const Operand B = decode(b, "B");
    // the lane's two rows of A and N / 4 columns of B, each element read once (rows g and
    // g + 8 of the warp's 16; columns 8 j + 2 t + c)
    constexpr int kJ = N / 8;
    float a_rows[2][16], b_cols[kJ][2][16];
    for (int k = 0; k < 16; ++k) {
      for (int r = 0; r < 2; ++r) a_rows[r][k] = a_operand.at(A, warp, g + 8 * r, k);
      for (int j = 0; j < kJ; ++j)
        for (int c = 0; c < 2; ++c) b_cols[j][c][k] = element(B, kB, 8 * j + 2 * t + c, k);
    }
    float result[N / 2];
    for (int j = 0; j < kJ; ++j) {
      for (int i = 0; i < 4; ++i) {
        result[4 * j + i] = cuda_emu::tensor_core_dot(accumulate ? d[4 * j + i] : 0.0f,
                                                      a_rows[i / 2], b_cols[j][i % 2], 16,
                                                      cuda_emu::kBf16Sum);
      }
    }
    cuda_emu::warp_collective_end();
    for (int i = 0; i < N / 2; ++i) d[i] = result[i];
  };
  cuda_emu::async_mma_issue(std::move(product));
}

// Both operands from shared memory.
template <int N>
void issue_wgmma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, Major kA, Major kB,
                    bool accumulate) {
  uint32_t mine[5] = {0, 0, 0, 0, accumulate ? 1u : 0u};
  std::memcpy(mine, &a, sizeof a);
  std::memcpy(mine + 2, &b, sizeof b);
  OperandA operand;
  operand.desc = a;
  operand.major = kA;
  issue_wgmma<N>(d, operand, nullptr, b, kB, accumulate, mine, 5, 5);
}

}  // namespace emu_sm90

// d (64 x 128 over the warpgroup) = a b + (accumulate ? d : 0), a and b laid out kA and kB,
// performed at the wait.
template <Major kA, Major kB>
void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t a, uint64_t b, bool accumulate) {
  emu_sm90::issue_wgmma_ss<128>(d, a, b, kA, kB, accumulate);
}
// The same at n = 64.
template <Major kA, Major kB>
void wgmma_m64n64k16_bf16(float (&d)[32], uint64_t a, uint64_t b, bool accumulate) {
  emu_sm90::issue_wgmma_ss<64>(d, a, b, kA, kB, accumulate);
}
// A from the warp's registers (ptx_sm90.cuh's fragment), b laid out kB.
template <Major kB>
void wgmma_m64n64k16_bf16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b,
                             bool accumulate) {
  uint32_t mine[7] = {0, 0, accumulate ? 1u : 0u, a[0], a[1], a[2], a[3]};
  std::memcpy(mine, &b, sizeof b);
  emu_sm90::OperandA operand;
  operand.in_registers = true;
  emu_sm90::issue_wgmma<64>(d, operand, a, b, kB, accumulate, mine, 7, 3);
}

}  // namespace ddpm::cuda::ptx
