// The three Ampere instructions a fast GEMM is made of, as small device functions (inline
// PTX under nvcc; emulated on the CPU by tests/cuda_emulation/ptx.h, the same names):
//
//   cp.async.{cg,ca}.shared.global
//                               16 bytes global -> shared without passing through registers:
//                               the loads of the next stages are in flight while the warps
//                               multiply the current one. Grouped by commit_group; a thread
//                               waits with wait_group<N> until all but its newest N groups
//                               have landed, then a __syncthreads makes them everyone's.
//                               src_bytes 0 zero-fills the 16 bytes (padding, partial tiles).
//   ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16
//                               four 8x8 matrices of 16-bit values from shared memory into
//                               fragments: lanes 8q..8q+7 give the row addresses of matrix q
//                               (16 bytes each, 16-byte aligned), and lane l receives in r[q]
//                               the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix q,
//                               or with .trans those of its transpose (2(l%4), l/4) and
//                               (2(l%4)+1, l/4). One instruction replaces 8 scalar loads
//                               per lane, and .trans turns an MN-major tile into K-major
//                               fragments for free.
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//                               D (16x8, fp32) = A (16x16, bf16) B (16x8, bf16) + C, one warp.
//                               With g = lane/4, t = lane%4 (PTX ISA, "Matrix Fragments for
//                               mma.m16n8k16 with floating point type"), two bf16 per 32-bit
//                               register, the lower element first:
//                                 a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//                                 a[2] = A[g][2t+8..+9]     a[3] = A[g+8][2t+8..+9]
//                                 b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..+9][g]
//                                 d[0..1] = D[g][2t..2t+1]  d[2..3] = D[g+8][2t..2t+1]
//                               So ldmatrix.x4 of the 16x16 A tile, matrices ordered (rows
//                               0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15), gives
//                               a[0..3] directly.
// All need sm_80 or later; kernels using them are compiled empty below that
// (DDPM_HAS_SM80_TENSOR_CORES) and the host side refuses such devices.
#pragma once

#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace ddpm::cuda::ptx {
// Where cp.async keeps a copy's source lines on their way to shared memory: in L2 only
// (.cg), for an operand a block reads once; or in the SM's L1 as well (.ca), for one the
// block reads again soon. Convolution v4's forward and dgrad gather their A operand through
// overlapping windows: the taps of a 3 x 3 kernel read each input pixel up to 9 times in one
// block's K loop, a few stages apart (conv2d_bf16.cu), which is why CUTLASS's implicit-GEMM
// convolutions cache activations in L1 ("CacheOperation::Always") and filters in L2 only.
enum class CacheAt { L2, L1 };
}  // namespace ddpm::cuda::ptx

#if DDPM_CUDA_EMULATION
#include "tests/cuda_emulation/ptx.h"
#else

namespace ddpm::cuda::ptx {

// A shared-memory address as the instructions take it: the 32-bit offset in the shared
// window. A kernel converts its tiles' base once (shared_address) and then adds byte offsets,
// where a generic pointer costs a conversion (and, on sm_90, a read of the block's place in
// its cluster) at every instruction. Under the emulation it is the host address.
using SharedAddress = uint32_t;
__device__ __forceinline__ SharedAddress shared_address(const void* p) {
  return static_cast<SharedAddress>(__cvta_generic_to_shared(p));
}

// `a` as a value the compiler cannot recompute: an empty asm it cannot see through, so it
// keeps `a` in the register it was computed into. For a base address a K loop adds to at
// every stage: left visible, ptxas rematerialised the sm_90 conversion (a read of the block's
// place in its cluster and two shifts) twice a stage in conv v4 rather than hold a register
// (scripts/sass_loops.py: 6 of the forward's 163 instructions a stage).
__device__ __forceinline__ SharedAddress computed_once(SharedAddress a) {
  asm volatile("" : "+r"(a));
  return a;
}

// 16 bytes from global `src` to shared `dst` (both 16-byte aligned); zeros when !valid
// (src is then not read, but must still be a valid address expression). `at`: L2 only
// (.cg), or L1 as well (.ca: CacheAt above); best a constant (a choice made at run time
// issues both instructions, predicated, and their addresses twice).
__device__ __forceinline__ void cp_async_16(SharedAddress dst, const void* src, bool valid,
                                            CacheAt at = CacheAt::L2) {
#if __CUDA_ARCH__ >= 800
  const int src_bytes = valid ? 16 : 0;
  if (at == CacheAt::L1)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
#endif
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(shared_address(dst), src, valid);
}

__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], SharedAddress row) {
#if __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
#endif
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  ldmatrix_x4(r, shared_address(row));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], SharedAddress row) {
#if __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  ldmatrix_x4_trans(r, shared_address(row));
}

// d += a b on the tensor cores (bf16 products, fp32 accumulation).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// The TF32 pair of the above (the TF32 convolution, conv2d_tf32.cu): a register holds one
// fp32 value, which the tensor cores read as TF32, ignoring its low 13 bits (truncation:
// CUTLASS's round_toward_zero conversion to TF32 is a plain reinterpretation); d (16x8) +=
// A (16x8) B (8x8) with, by the PTX ISA's "Matrix Fragments for mma.m16n8k8" (.tf32), a[0] =
// A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4], b[0] = B[t][g], b[1] =
// B[t+4][g], d as above. These are the 32-bit words that ldmatrix (no .trans) gives from a
// K-major tile whose 16-byte rows hold 4 fp32 values: the bf16 kernel's fragment addresses,
// unchanged, serve TF32 operands read as pairs of 16-bit halves.
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4],
                                              const uint32_t (&b)[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

}  // namespace ddpm::cuda::ptx

#endif  // DDPM_CUDA_EMULATION
