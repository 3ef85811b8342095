// Hopper's warpgroup matrix multiply (wgmma, sm_90a) as small device functions: inline PTX
// under nvcc, emulated on the CPU by tests/cuda_emulation/ptx_sm90.h (the same names). The
// instructions a Hopper GEMM is made of (kernels/cuda/wgmma_tile.cuh's tile, under the GEMM
// gemm_sm90.cu and convolution v5), beside ptx.cuh's Ampere ones (mma.sync, ldmatrix,
// cp.async), which Hopper runs at a fraction of its tensor rate.
//
//   wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16
//       D (64 x 128, fp32, in registers) = A (64 x 16, bf16) B (16 x 128, bf16) (+ D), both
//       operands read from shared memory, issued by a warpgroup: 4 consecutive warps, the
//       first's index a multiple of 4, all 128 threads together. One instruction is 64 of
//       mma.sync's m16n8k16, and it needs no ldmatrix: the tensor cores read the tiles.
//       Asynchronous: it returns at once; wgmma.commit_group closes the group of those issued
//       since the last, and wgmma.wait_group<n> waits until at most n groups are in flight.
//       Until then neither D's registers nor the shared memory being read may be touched.
//       wgmma.fence orders the registers' earlier accesses before the next wgmma (needed
//       before the first, and after D was written by anything else).
//   wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
//       The same at n = 64 (32 floats a thread), in two forms: both operands from shared
//       memory, or A from registers (the "RS" form, no trans bit for A): each warp of the
//       group gives its 16 rows as four .b32 registers of bf16 pairs, laid out as mma.sync's
//       m16n8k16 A fragment (ptx.cuh): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..],
//       a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..] (rows of the warp's 16, the lower half
//       of a pair the smaller k). Like D's, those registers belong to the instruction until
//       its wait. The flash-attention forward on wgmma (attention_flash_wgmma.cu) multiplies
//       S = Q K^T with the first and O += P V with the second, P straight from S's
//       accumulators, whose layout along n is this A layout along k.
//   D's fragments (PTX ISA, "Register Fragments and Shared Memory Matrix Layouts" of wgmma,
//       .m64nNk16 accumulators): warp w of the group holds rows 16w..16w+15 laid out as
//       mma.sync's m16n8 accumulator (ptx.cuh), repeated along n. With g = lane / 4,
//       t = lane % 4:  d[4j + i] = D[16w + g + 8 (i / 2)][8j + 2t + i % 2], j < 16, i < 4.
//   The operands: a 64-bit matrix descriptor each (PTX ISA, "Matrix Descriptor Format"):
//       bits 0-13 the start address >> 4 (shared-window bytes), 16-29 the leading-dimension
//       byte offset >> 4, 32-45 the stride-dimension byte offset >> 4, 49-51 a base offset,
//       62-63 the swizzle (1: 128 bytes). We use the 128-byte swizzle only (`Sw128` below):
//       rows of 128 bytes in atoms of 8 rows = 1024 bytes, the 16-byte chunk c of row r
//       stored at chunk c ^ (r % 8). The hardware's swizzle is the XOR of address bits 4-6
//       with bits 7-9, so an atom must start at a multiple of 1024 bytes. What a row holds
//       depends on which dimension of the operand is contiguous (`Major`, major.h):
//     K-major (A m x k with k contiguous, B n x k likewise; the instruction's trans bit 0):
//       a row is one m (or n) and 64 bf16 of k; atoms of 8 rows follow one another (the
//       stride byte offset, 1024). The k-th 16 of a row's 64 are the descriptor of the tile
//       with 32 k bytes added to the start (bits 7-9 unchanged, so the base offset stays 0).
//       The leading byte offset is unused when k16 stays inside the 128-byte row (set to
//       1, as the ISA suggests).
//     MN-major (m or n contiguous, as an NHWC tensor's channels are when the reduction runs
//       over pixels; trans bit 1, bf16 and f16 only): a row is one k and 64 bf16 of m (or
//       n); 8 rows of k make an atom, atoms of k follow one another (the stride byte
//       offset, 1024), and the next 64 of m (n) are a panel further (the leading byte
//       offset: a panel's bytes). The k-th 16 are two atoms, 2048 bytes, on. (The PTX
//       ISA's "Canonical Layouts" table of wgmma says the same: MN-major with the 128-byte
//       swizzle is ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8 bf16 in 16 bytes: LBO between
//       the m repeats of 64, SBO between the groups of 8 k. CUTLASS's GMMA descriptors agree.)
//   fence.proxy.async.shared::cta
//       wgmma reads shared memory through the "async proxy"; what ordinary stores and
//       cp.async wrote there (the generic proxy) is visible to it only after this fence in
//       the writing thread, then a barrier.
// And the bulk tensor copy (TMA) that can feed those tiles instead of cp.async:
//   cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes
//       One thread asks the copy engine for a whole box of a 2-d tensor (a CUtensorMap,
//       made on the host: kernels/cuda/tensor_map.cu) at element coordinates {c0, c1}, c0
//       the contiguous dimension's. The engine writes the box to shared memory row after
//       row, in the map's swizzle: with the 128-byte one and rows of 128 bytes, chunk c of
//       row r lands at c ^ (r % 8), which is Sw128 below, the layout wgmma reads (the
//       destination 1024-byte aligned, as the atoms are). Elements outside the tensor are
//       written as zeros, so partial tiles need no predication, and no thread computes an
//       address per chunk. It runs in the async proxy, like wgmma: no proxy fence between
//       them. Completion is counted in bytes on an mbarrier: each copy adds the box's bytes
//       (all of them, zero-filled ones too) to the barrier's transaction count as it lands.
//   cp.async.bulk.tensor.4d...im2col (the same, in the copy engine's im2col mode)
//       The map (cuTensorMapEncodeIm2col) is an NHWC tensor with a bounding box for a
//       filter's base; a copy of {c, w, h, n} at offsets {kw, kh} writes the map's pixels a
//       column rows of its channels a pixel, row p the p-th base from {w, h, n} walking the
//       box (W, then H, then the image), read at base + offsets: a convolution's gathered
//       rows at one tap, by one thread (convolution v5's WgmmaIm2col).
//   mbarrier (a 64-bit object in shared memory; PTX ISA "Parallel Synchronization and
//       Communication Instructions: mbarrier"): init sets its arrival count; each phase
//       completes when that many arrivals and every expected transaction byte are in, and
//       the next phase begins. arrive.expect_tx raises the bytes expected, then arrives;
//       arrive just arrives.
//       try_wait.parity p is true once the phase of parity p has completed (the phases of
//       a barrier alternate in parity, so a stage's k-th use waits for parity k % 2).
//       fence.mbarrier_init makes an init visible to the async proxy (the copy engine),
//       before a barrier makes it visible to the other threads.
// All need the sm_90a target (-gencode arch=compute_90a,code=sm_90a: the "a" features are
// not in plain sm_90 code, nor in PTX any later GPU could compile); kernels using them are
// compiled empty elsewhere (DDPM_HAS_SM90A_WGMMA) and their host side says so.
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/major.h"
#include "kernels/cuda/ptx.cuh"

#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || DDPM_CUDA_EMULATION
#define DDPM_HAS_SM90A_WGMMA 1
#else
#define DDPM_HAS_SM90A_WGMMA 0
#endif

namespace ddpm::cuda::ptx {

// The 128-byte swizzle both layouts use: where chunk `chunk` (16 bytes) of 128-byte row `row`
// is, in bytes from the start (a multiple of 1024 in the shared window). A K-major tile's
// rows are its m (n), an MN-major panel's rows its k (see above).
struct Sw128 {
  static constexpr int kRowBytes = 128;              // 64 bf16
  static constexpr int kAtomBytes = 8 * kRowBytes;   // the swizzle's period: 8 rows
  static constexpr uint32_t kSwizzle128 = 1;         // the descriptor's swizzle field
  __host__ __device__ static constexpr int offset(int row, int chunk) {
    return row * kRowBytes + ((chunk ^ (row % 8)) * 16);
  }
  // The descriptor's fields but the start: the two byte offsets and the swizzle.
  __host__ __device__ static constexpr uint64_t fields(uint32_t leading_bytes,
                                                      uint32_t stride_bytes) {
    return uint64_t{leading_bytes >> 4} << 16 | uint64_t{stride_bytes >> 4} << 32 |
           uint64_t{kSwizzle128} << 62;
  }
  // The descriptor `desc` with its start moved `bytes` on (a multiple of 16): the start
  // field (bits 0-13, the shared-window address / 16) plus bytes / 16, one add where
  // building it again takes several. Only while the start stays inside the 18-bit shared
  // window, so that the field cannot carry into the next: true of every tile in a block's
  // shared memory.
  __host__ __device__ static constexpr uint64_t moved(uint64_t desc, uint32_t bytes) {
    return desc + (bytes >> 4);
  }
};

}  // namespace ddpm::cuda::ptx

#if DDPM_CUDA_EMULATION
#include "tests/cuda_emulation/ptx_sm90.h"
#else

namespace ddpm::cuda::ptx {

// The descriptor of a Sw128 operand whose k-slice of 16 starts at shared-window address
// `start`, with the byte offsets of its layout (wgmma_tile.cuh's TileLayout gives them).
__device__ __forceinline__ uint64_t sw128_descriptor(SharedAddress start, uint32_t leading_bytes,
                                                     uint32_t stride_bytes) {
  return (start & 0x3FFFF) >> 4 | Sw128::fields(leading_bytes, stride_bytes);
}

__device__ __forceinline__ void wgmma_fence() {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit_group() {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// An empty asm that reads and writes every accumulator: placed before a wgmma and after its
// wait, it keeps the compiler from moving (copying, reading) them while the tensor cores own
// them, since it cannot see that the wgmma asm's outputs arrive only at the wait.
template <int kCount>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// The same for the A fragments of the register form, after the wait that frees them.
template <int kCount>
__device__ __forceinline__ void wgmma_fence_operands(uint32_t (&a)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+r"(a[i])::"memory");
}
__device__ __forceinline__ void fence_proxy_async_shared() {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void mbarrier_init(SharedAddress bar, unsigned arrivals) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
#else
  (void)bar, (void)arrivals;
#endif
}
__device__ __forceinline__ void fence_mbarrier_init() {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(SharedAddress bar, uint32_t bytes) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#else
  (void)bar, (void)bytes;
#endif
}
// One arrival, no bytes: a consumer's "done with this stage" (the warp-specialised GEMM's
// released barriers).
__device__ __forceinline__ void mbarrier_arrive(SharedAddress bar) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
  (void)bar;
#endif
}
// Returns once the phase of parity `parity` has completed. A phase that can never complete
// (bytes expected that no copy brings: a bug) would spin until the process is killed; past
// 2^34 clock cycles (about 9 s at 1.98 GHz, where a tile lands in microseconds) the kernel
// traps instead, so a GPU test fails at once with a launch failure, not at its timeout.
// (ptxas notes, C7517, that it adds a warpgroup wait there: on the trap's path only.)
__device__ __forceinline__ void mbarrier_wait(SharedAddress bar, unsigned parity) {
#if DDPM_HAS_SM90A_WGMMA
  constexpr long long kGiveUpCycles = 1ll << 34;
  const long long start = clock64();
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done == 0 && clock64() - start > kGiveUpCycles) __trap();
  } while (done == 0);
#else
  (void)bar, (void)parity;
#endif
}
// The box of `map` at element coordinates {c0, c1} (a rank-2 map) or {c0, c1, c2} (rank 3)
// into shared memory at dst, completing its bytes on the mbarrier at bar. `map` is a
// __grid_constant__ kernel parameter.
__device__ __forceinline__ void tma_load_2d(SharedAddress dst, const CUtensorMap* map, int c0,
                                            int c1, SharedAddress bar) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#else
  (void)dst, (void)map, (void)c0, (void)c1, (void)bar;
#endif
}
__device__ __forceinline__ void tma_load_3d(SharedAddress dst, const CUtensorMap* map, int c0,
                                            int c1, int c2, SharedAddress bar) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
#else
  (void)dst, (void)map, (void)c0, (void)c1, (void)c2, (void)bar;
#endif
}

// The im2col box of a rank-4 (NHWC) map made by cuTensorMapEncodeIm2col (tensor_map.cu's
// bf16_im2col_tensor_map_sw128) into shared memory at dst: its pixels a column rows, row p
// the p-th filter base from {w, h, n} inside the map's bounding box (W fastest, then H,
// then the image), each its channels a pixel from channel c at base + {offset_w, offset_h}
// (zeros outside the tensor: PTX ISA, "Tensor im2col mode"), completing on the mbarrier at
// bar. The offsets are the instruction's 16-bit im2colInfo, innermost dimension first, as
// the coordinates are.
__device__ __forceinline__ void tma_load_im2col_4d(SharedAddress dst, const CUtensorMap* map,
                                                   int c, int w, int h, int n, uint16_t offset_w,
                                                   uint16_t offset_h, SharedAddress bar) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3, %4, %5}], [%6], {%7, %8};\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c), "r"(w), "r"(h), "r"(n), "r"(bar),
      "h"(offset_w), "h"(offset_h)
      : "memory");
#else
  (void)dst, (void)map, (void)c, (void)w, (void)h, (void)n, (void)offset_w, (void)offset_h,
      (void)bar;
#endif
}

// A wgmma's 8 accumulators from d[i] on, as asm operands; and the list of 32 of them.
#if DDPM_HAS_SM90A_WGMMA
#define DDPM_D8(i)                                                                     \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define DDPM_D32_LIST                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "            \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
#endif

// d (64 x 128 over the warpgroup, 64 floats a thread) = a b + (accumulate ? d : 0), a and b
// laid out kA and kB (the instruction's trans bits).
template <Major kA, Major kB>
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t a, uint64_t b,
                                                      bool accumulate) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, %67, %68;\n}\n"
      : DDPM_D8(0), DDPM_D8(8), DDPM_D8(16), DDPM_D8(24), DDPM_D8(32), DDPM_D8(40), DDPM_D8(48),
        DDPM_D8(56)
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kA == Major::MN ? 1 : 0),
        "n"(kB == Major::MN ? 1 : 0));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
#endif
}

// d (64 x 64 over the warpgroup, 32 floats a thread) = a b + (accumulate ? d : 0), both from
// shared memory, laid out kA and kB.
template <Major kA, Major kB>
__device__ __forceinline__ void wgmma_m64n64k16_bf16(float (&d)[32], uint64_t a, uint64_t b,
                                                     bool accumulate) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " DDPM_D32_LIST
               "%32, %33, p, 1, 1, %35, %36;\n}\n"
               : DDPM_D8(0), DDPM_D8(8), DDPM_D8(16), DDPM_D8(24)
               : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)),
                 "n"(kA == Major::MN ? 1 : 0), "n"(kB == Major::MN ? 1 : 0));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
#endif
}

// The register form: A's fragment a (above), b from shared memory laid out kB.
template <Major kB>
__device__ __forceinline__ void wgmma_m64n64k16_bf16_rs(float (&d)[32], const uint32_t (&a)[4],
                                                        uint64_t b, bool accumulate) {
#if DDPM_HAS_SM90A_WGMMA
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " DDPM_D32_LIST
               "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
               : DDPM_D8(0), DDPM_D8(8), DDPM_D8(16), DDPM_D8(24)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b),
                 "r"(static_cast<int>(accumulate)), "n"(kB == Major::MN ? 1 : 0));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
#endif
}

#if DDPM_HAS_SM90A_WGMMA
#undef DDPM_D8
#undef DDPM_D32_LIST
#endif

}  // namespace ddpm::cuda::ptx

#endif  // DDPM_CUDA_EMULATION
