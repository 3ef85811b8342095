// How a tensor core adds its products: the sums of wmma.h, ptx.h (mma.sync) and ptx_sm90.h
// (wgmma), and why they are not the CPU's round-to-nearest fp32 sums.
//
// A tensor core is not a chain of IEEE FMAs. Fasi, Higham, Mikaitis and Pranesh ("Numerical
// behavior of NVIDIA tensor cores", PeerJ Computer Science 2021) found a *block* FMA: a few
// products (exact: a bf16 or TF32 product fits in fp32's significand) and the accumulator
// are added at once, as fixed-point numbers aligned to the largest of them; the bits below
// that alignment's last place are dropped (truncated, not rounded), and the sum is
// normalised to fp32 by truncation too. So each block loses up to about an ulp of the
// accumulator toward zero, and over K terms a dot product comes out a little smaller in
// magnitude than a round-to-nearest sum: a bias, not noise. This is what made an H200 fail
// a bound that assumed round-to-nearest sums (docs/gpu-report.md, 2026-12-04).
//
// The model, with two parameters:
//   block       how many products go into one block with the accumulator;
//   extra_bits  how many bits below the largest term's 24-bit significand the alignment
//               keeps (0: every term cut to the largest term's fp32 grid).
// An instruction runs its K in blocks of `block`, in k order, each block's result the next
// one's accumulator. Here a block's terms are exact in double, truncated to the alignment's
// grid, summed exactly (at most 17 terms of 24 + extra_bits bits: within double's 53), and
// the sum truncated to fp32.
//
// Where the parameters come from. When the H200 failed that bound it printed 75 output and
// dgrad elements of conv v3 (TF32 WMMA) with all their bits, at nine of the CIFAR-10 model's
// shapes (docs/gpu-runs/2026-12-04/ctest-gpu.log; e.g. 24.998754501342773 where the CPU's
// sum is 24.998893737792969, 73 ulps away). The emulated kernel issues the same instructions
// in the same order on the same operands, so only the instruction's arithmetic can make its
// bits differ from the H200's. Rounding to nearest gave none of the 75. Blocks of 4 with
// 2 extra bits give all 75, bit for bit. Blocks of 4 with 0, 1, 3, 4 or 6 extra bits, and of
// 8 with 3 or 6, miss each of the ten elements of the 16x16 layer of 256 channels, by 6 to
// 1104 ulps. `CudaOps.Conv2dTensorCoreSumsAreTheH200sBits` (test_cuda_ops.cpp) holds ten.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace cuda_emu {

struct TensorCoreSum {
  int block;
  int extra_bits;
};

// TF32 (mma.m16n8k8 .tf32, WMMA m16n16k8): measured, see above.
inline constexpr TensorCoreSum kTf32Sum{4, 2};
// bf16 (mma.m16n8k16 .bf16, wgmma m64nNk16): Fasi et al.'s block of 8 on the A100, where
// their TF32 block was 4 as the H200's is; the alignment's extra bits as TF32's. Not yet
// checked against a GPU: `CudaTensorCoreSum.Bf16SumsAreTheModels` does, on the next one.
inline constexpr TensorCoreSum kBf16Sum{8, 2};

namespace tc_detail {

// x rounded toward zero to fp32; x is a double that holds the exact sum.
inline float to_float_toward_zero(double x) {
  const float f = static_cast<float>(x);
  if (std::fabs(static_cast<double>(f)) > std::fabs(x))
    return std::nextafter(f, 0.0f);
  return f;
}

// The exponent of a nonzero, normal double x: |x| in [2^e, 2^(e+1)). (Every term here is
// normal in double: bf16 and TF32 products, fp32 sums.) Read from the bits, as the
// truncation below works on them: every emulated mma runs these, so they are kept cheap.
inline int exponent_of(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return static_cast<int>((bits >> 52) & 0x7ff) - 1023;
}

// x truncated toward zero to a multiple of 2^lsb: the fraction bits below it cleared.
inline double truncate_to(double x, int lsb) {
  if (x == 0.0) return x;
  const int keep = exponent_of(x) - lsb;  // fraction bits at 2^lsb or above
  if (keep >= 52) return x;
  if (keep < 0) return std::copysign(0.0, x);
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits &= ~((uint64_t{1} << (52 - keep)) - 1);
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

// One block: c and n exact products, aligned to the largest, truncated, summed, and the sum
// normalised to fp32 by truncation.
inline float block_fma(float c, const double* products, int n, int extra_bits) {
  int largest = INT32_MIN;
  if (c != 0.0f) largest = exponent_of(c);
  for (int i = 0; i < n; ++i)
    if (products[i] != 0.0) largest = std::max(largest, exponent_of(products[i]));
  if (largest == INT32_MIN) return c + 0.0f;  // all zero (+0 unless c is -0 and no product)
  // fp32's last place for the largest term is 2^(largest - 23); the alignment keeps
  // extra_bits more. Every truncated term is a multiple of it below 2^(largest + 1) in
  // size, so their sum (at most 17 terms) needs 24 + extra_bits + 5 bits: exact in double.
  const int lsb = largest - 23 - extra_bits;
  double sum = truncate_to(c, lsb);
  for (int i = 0; i < n; ++i) sum += truncate_to(products[i], lsb);
  return to_float_toward_zero(sum);
}

}  // namespace tc_detail

// c + sum over k < K of a[k] * b[k], as the tensor cores add it (a and b hold values a bf16
// or TF32 operand can take, so each product is exact in double). K at most 16.
inline float tensor_core_dot(float c, const float* a, const float* b, int K, TensorCoreSum how) {
  double products[16];
  for (int k = 0; k < K; ++k) products[k] = static_cast<double>(a[k]) * static_cast<double>(b[k]);
  float acc = c;
  for (int k0 = 0; k0 < K; k0 += how.block) {
    const int n = K - k0 < how.block ? K - k0 : how.block;
    acc = tc_detail::block_fma(acc, products + k0, n, how.extra_bits);
  }
  return acc;
}

}  // namespace cuda_emu
