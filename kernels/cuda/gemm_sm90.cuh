// A bf16 GEMM on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a): the first
// piece of a Hopper path beside convolution v4's mma.sync (kernels/cuda/gemm_sm90.cu says
// how it works; convolution v5 runs on the same tile, wgmma_tile.cuh). Not used by the
// engine: it is tested against the CPU reference (under the emulation everywhere, on an
// H100 / H200 when one runs the tests) and kernel-bench times it against cuBLAS, so that a
// GPU says whether the layouts are right and how fast the instruction is, on the plainest
// use of it.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/major.h"

namespace ddpm::cuda {

// True when the current device is compute capability 9.0 and this binary carries the kernel's
// sm_90a code (a build for architecture 90: CMake compiles gemm_sm90.cu for 90a there). The
// first call launches a one-thread probe and waits for it.
bool gemm_sm90_available();
// What gemm_sm90_available() lacks, for the refusals of everything built on wgmma: "needs a
// GPU of compute capability 9.0 (H100, H200) and a build with sm_90a code (...); this device
// is sm_XX". Asks the current device (call it only with one).
std::string sm90a_missing();

// c (m x n, fp32, row-major) = A B^T with A (m x k) and B (n x k) bf16 bits, products summed
// in fp32. Each operand K-major or MN-major (major.h): a is A (m x k, row-major) or A^T
// (k x m), b is B (n x k) or B^T (k x n). So the linear layer's three products are its
// forward y = x w^T (K, K), its dgrad dx = dy w (K, MN) and its wgrad dw = dy^T x (MN, MN).
// A K-major operand needs k a multiple of 8, an MN-major one its m (n) a multiple of 8 (whole
// 16-byte chunks), and a, b 16-byte aligned; the rest any size. Refuses, naming what is
// missing, when gemm_sm90_available() is false.
// How the tiles reach shared memory (gemm_sm90.cu has all three): every thread's cp.async;
// the copy engine's bulk tensor copies (TMA), asked for by one thread, with a block barrier
// a stage; or TMA in the warp-specialised schedule (a producer warpgroup and two consumer
// warpgroups handing stages over through mbarriers). TmaPaired: the plain TMA schedule in a
// ring of 3 stages, not 4, so that two blocks share an SM. The same products and bits each
// way; CpAsync stays the default until a GPU has timed them.
enum class GemmLoads { CpAsync, Tma, TmaWarpSpecialized, TmaPaired };

// How many blocks of the plain TMA kernel (both operands K-major) an SM of the current GPU
// holds at once, by the occupancy calculator: Tma's ring of 4 stages is sized for 1,
// TmaPaired's of 3 for 2. A GPU's answer: the CPU emulation refuses.
int gemm_sm90_blocks_an_sm(GemmLoads loads);

void gemm_bf16_sm90(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                    float* c, Major a_major = Major::K, Major b_major = Major::K,
                    GemmLoads loads = GemmLoads::CpAsync);

}  // namespace ddpm::cuda
