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
//                    (block.h), since on a GPU the copy may land first.
//   descriptors      the start address field holds the offset from the block's dynamic
//                    shared memory (the emulation's shared window); only the 128-byte swizzle
//                    with base offset 0 is implemented (what ptx_sm90.cuh uses), and a start
//                    whose address bits 7-9 are not 0 traps: the hardware would need the
//                    base offset field. The swizzle is applied to host address bits 4-6 from
//                    bits 7-9, so a kernel's 1024-byte alignment of its tiles (done on what
//                    shared_address() gives, here the host address) is what makes the
//                    pattern match.
//   fences           wgmma.fence and fence.proxy.async are no-ops: the emulation has one
//                    proxy, and performing a product at its wait is the latest the hardware
//                    may. A kernel missing either passes here and may fail on a GPU.
// What this cannot prove: a layout misread the same way here and in a kernel passes here and
// fails on a GPU; the GPU tests remain the final word.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/bf16.h"
#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"

namespace ddpm::cuda::ptx {

namespace emu_sm90 {

inline uintptr_t shared_base() {
  return reinterpret_cast<uintptr_t>(cuda_emu::dynamic_shared_memory());
}

// What a Sw128KMajor descriptor says, decoded: the start as a host address.
struct Operand {
  uintptr_t start = 0, stride = 0;
};

inline Operand decode(uint64_t desc, const char* which) {
  const uint64_t swizzle = desc >> 62, base_offset = (desc >> 49) & 7;
  if (swizzle != Sw128KMajor::kSwizzle128 || base_offset != 0)
    cuda_emu::trap((std::string("wgmma: descriptor of ") + which +
                    ": only the 128-byte swizzle with base offset 0 is emulated")
                       .c_str());
  Operand o;
  o.start = shared_base() + ((desc & 0x3FFF) << 4);
  o.stride = ((desc >> 32) & 0x3FFF) << 4;
  if ((o.start >> 7) & 7)
    cuda_emu::trap((std::string("wgmma: descriptor of ") + which +
                    " starts past the first row of a 1024-byte swizzle atom (the hardware "
                    "would need the base offset)")
                       .c_str());
  return o;
}

// Element (row, k) of a K-major 128-byte-swizzled operand: the address in the canonical
// layout, then bits 4-6 XORed with bits 7-9.
inline float element(const Operand& o, int row, int k) {
  const uintptr_t logical = o.start + (row / 8) * o.stride + (row % 8) * 128 + 2 * k;
  const uintptr_t physical = logical ^ (((logical >> 7) & 7) << 4);
  uint16_t bits;
  std::memcpy(&bits, reinterpret_cast<const void*>(physical), 2);
  return float_from_bf16_bits(bits);
}

struct Issue {
  uint64_t a, b;
  bool accumulate;
};

}  // namespace emu_sm90

inline uint64_t sw128_descriptor(SharedAddress start) {
  const uintptr_t base = emu_sm90::shared_base();
  if (start < base || start - base >= (uintptr_t{1} << 18))
    cuda_emu::trap("wgmma descriptor: the address is not in the block's dynamic shared memory");
  const uint64_t address = (start - base) >> 4;
  const uint64_t stride = Sw128KMajor::kAtomBytes >> 4;
  return address | uint64_t{1} << 16 | stride << 32 | uint64_t{Sw128KMajor::kSwizzle128} << 62;
}

inline void wgmma_fence() {}
template <int kCount>
inline void wgmma_fence_operands(float (&)[kCount]) {}  // a compiler hint on a GPU
inline void fence_proxy_async_shared() {}
inline void wgmma_commit_group() { cuda_emu::async_mma_commit(); }

template <int kPending>
inline void wgmma_wait_group() {
  for (const cuda_emu::AsyncMma& product : cuda_emu::async_mma_wait(kPending)) product.perform();
}

// d (64 x 128 over the warpgroup) = a b + (accumulate ? d : 0), performed at the wait.
inline void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t a, uint64_t b, bool accumulate) {
  const emu_sm90::Issue mine{a, b, accumulate};
  unsigned lanes = 0;
  const uint64_t* all = cuda_emu::warp_collective_begin("wgmma.mma_async", 0xffffffffu,
                                                        cuda_emu::to_bits(&mine), &lanes);
  if (lanes != 0xffffffffu) cuda_emu::trap("wgmma.mma_async needs all 32 lanes of the warp");
  for (int lane = 0; lane < 32; ++lane) {
    const auto* o = cuda_emu::from_bits<const emu_sm90::Issue*>(all[lane]);
    if (o->a != a || o->b != b || o->accumulate != accumulate)
      cuda_emu::trap("wgmma.mma_async: the lanes of a warp give different operands");
  }
  cuda_emu::warp_collective_end();
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  if ((tid / 128 + 1) * 128 > threads)
    cuda_emu::trap("wgmma.mma_async: the block's threads do not make whole warpgroups of 128");
  const int warp = static_cast<int>(tid / 32 % 4), g = static_cast<int>(tid % 32 / 4),
            t = static_cast<int>(tid % 4);
  cuda_emu::AsyncMma product;
  if (tid % 32 == 0) {  // what the warp's product reads: A's 64 rows, B's 128, whole atoms
    const emu_sm90::Operand A = emu_sm90::decode(a, "A"), B = emu_sm90::decode(b, "B");
    product.reads = {{A.start & ~uintptr_t{127}, (A.start & ~uintptr_t{127}) + 8 * A.stride},
                     {B.start & ~uintptr_t{127}, (B.start & ~uintptr_t{127}) + 16 * B.stride}};
  }
  product.perform = [&d, a, b, accumulate, warp, g, t] {
    // every lane of the warp performs its products in the same order (its waits mirror the
    // issues), so a collective here keeps the warp together as the instruction does
    unsigned at_wait = 0;
    cuda_emu::warp_collective_begin("wgmma.wait_group", 0xffffffffu, 0, &at_wait);
    if (at_wait != 0xffffffffu) cuda_emu::trap("wgmma.wait_group needs all 32 lanes of the warp");
    const emu_sm90::Operand A = emu_sm90::decode(a, "A"), B = emu_sm90::decode(b, "B");
    float result[64];
    for (int j = 0; j < 16; ++j) {
      for (int i = 0; i < 4; ++i) {
        const int row = 16 * warp + g + 8 * (i / 2), col = 8 * j + 2 * t + i % 2;
        float acc = accumulate ? d[4 * j + i] : 0.0f;
        for (int k = 0; k < 16; ++k)
          acc += emu_sm90::element(A, row, k) * emu_sm90::element(B, col, k);
        result[4 * j + i] = acc;
      }
    }
    cuda_emu::warp_collective_end();
    for (int i = 0; i < 64; ++i) d[i] = result[i];
  };
  cuda_emu::async_mma_issue(std::move(product));
}

}  // namespace ddpm::cuda::ptx
