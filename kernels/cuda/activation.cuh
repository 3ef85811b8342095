// SiLU and its derivative on the GPU, shared by the SiLU op (elementwise.cu) and the fused
// group norm + SiLU (group_norm.cu), so the fused op and the chain of the two give the same
// bits:
//   silu(h)  = h / (1 + e^-h)
//   silu'(h) = s (1 + h (1 - s)),  s = 1 / (1 + e^-h)
//
// With the multi-function unit's approximate exponential and reciprocal (__expf:
// ex2.approx of h log2(e); __fdividef: a times rcp.approx(b)): about 13 SASS instructions an
// element for silu and 17 for the derivative where expf and the IEEE division take 27 and
// 34 (sm_90, unrolled loops of scripts/sass_loops.py --memory). In the memory-bound passes
// that apply them (GN + SiLU forward, its dh) those were most of the instructions per byte,
// near the rate at which an SM issues them.
// Accuracy: __expf's error is 2 + floor(1.173 |x|) ulp and __fdividef's 2 ulp (CUDA C
// Programming Guide, intrinsic functions), so for |h| <= 16 the result is within ~2e-6 of
// the exact value relatively, against the CPU reference's correctly rounded-ish std::exp and
// division: far inside the tests' 2e-4 and one bf16 step (2^-8). Beyond, the values are
// h (h > 0) or nearly 0 (h < 0): __fdividef gives 0 where 1 + e^-h passes 2^126 (h < -87.3;
// the exact silu there is below 1e-36 in size), and silu'(h) is 0 or 1 likewise.
#pragma once

namespace ddpm::cuda {

__device__ __forceinline__ float silu_value(float h) { return __fdividef(h, 1.0f + __expf(-h)); }

// Its one multiply-add is an fmaf, not left to the compiler: the kernels that compute silu'
// (the dh pass, the fused backward) must give the same bits, and whether a compiler fuses
// an a * b + c can depend on the code around it (see norm_affine, group_norm_slab.cuh).
__device__ __forceinline__ float silu_derivative(float h) {
  const float s = __fdividef(1.0f, 1.0f + __expf(-h));
  return s * fmaf(h, 1.0f - s, 1.0f);
}

}  // namespace ddpm::cuda
