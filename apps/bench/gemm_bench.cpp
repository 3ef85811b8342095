// kernel-bench gemm: the Hopper wgmma GEMM (kernels/cuda/gemm_sm90.cu) next to cuBLAS's bf16
// GEMM on the same operands and layout, c = A B^T in fp32 of bf16 A (m x k) and B (n x k):
// both K-major (a, b stored m x k and n x k: cuBLAS's "TN" case, a forward's layout), and
// both MN-major (stored k x m and k x n: "NT", a wgrad's layout, wgmma's trans bits), at the
// CIFAR-10 model's 3x3 convolutions seen as GEMMs (m = batch x pixels, n = Cout, k = 9 Cin:
// the size of the convolution's forward without the gather) and one square size. TFLOP/s
// against the bf16 tensor-core peak. Each wgmma row three times: its tiles loaded by cp.async,
// by the copy engine (TMA loads), and by the copy engine in the warp-specialised schedule
// (gemm_sm90.cu). The wgmma rows need an sm_90 GPU and a build for
// architecture 90 (sm_90a code); elsewhere only cuBLAS's rows are written, and the first
// line says why.
#include <cublas_v2.h>

#include <cstdio>

#include "apps/bench/bench.h"
#include "engine/cuda_check.h"
#include "engine/ops.h"
#include "kernels/cuda/gemm_sm90.cuh"

namespace ddpm::bench {

void bench_gemm(const Options& o, Timer& timer, Report& report) {
  const bool wgmma = cuda::gemm_sm90_available();
  if (!wgmma)
    std::printf("gemm: no wgmma rows: gemm_bf16_sm90 needs a compute capability 9.0 GPU and "
                "a build with sm_90a code\n");
  struct Case {
    const char* name;
    int64_t m, n, k;
  } cases[] = {{"conv 32x32 128->128 as GEMM", o.batch * 1024, 128, 9 * 128},
               {"conv 16x16 256->256 as GEMM", o.batch * 256, 256, 9 * 256},
               {"conv 8x8 256->256 as GEMM", o.batch * 64, 256, 9 * 256},
               {"square", 4096, 4096, 4096}};
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  for (const Case& c : cases) {
    const int64_t m = o.smoke ? 200 : c.m, n = o.smoke ? 136 : c.n, k = o.smoke ? 72 : c.k;
    char shape[128];
    std::snprintf(shape, sizeof shape, "%s M%lld N%lld K%lld", c.name,
                  static_cast<long long>(m), static_cast<long long>(n),
                  static_cast<long long>(k));
    const Tensor a = cast(randn(Shape{m, k}, 1, 1, Device::CUDA), DType::BF16);
    const Tensor b = cast(randn(Shape{n, k}, 1, 2, Device::CUDA), DType::BF16);
    const Tensor out = Tensor::empty(Shape{m, n}, DType::F32, Device::CUDA);
    const double flops = 2.0 * m * n * k;
    // Row-major c (m x n) is column-major c^T = B A^T. K-major: b as stored is column-major
    // B^T (k x n), so op T; a is column-major A^T as is, op N. MN-major (a, b read as k x m
    // and k x n, the same bytes reinterpreted: the timing does not depend on the values):
    // b is column-major B, op N; a column-major A, op T.
    const float one = 1.0f, zero = 0.0f;
    for (const bool k_major : {true, false}) {
      const cublasOperation_t op_b = k_major ? CUBLAS_OP_T : CUBLAS_OP_N;
      const cublasOperation_t op_a = k_major ? CUBLAS_OP_N : CUBLAS_OP_T;
      const int ld_b = static_cast<int>(k_major ? k : n), ld_a = static_cast<int>(k_major ? k : m);
      if (o.wants(false))
        report.add_flops("gemm", shape,
                         k_major ? "cuBLAS bf16 (GemmEx, TN)" : "cuBLAS bf16 (GemmEx, NT)",
                         timer.median_ms([&] {
                           CUBLAS_CHECK(cublasGemmEx(
                               handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                               static_cast<int>(k), &one, b.raw(), CUDA_R_16BF, ld_b, a.raw(),
                               CUDA_R_16BF, ld_a, &zero, out.raw(), CUDA_R_32F,
                               static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                         }),
                         flops);
      if (!wgmma || !o.wants(true)) continue;
      const cuda::Major major = k_major ? cuda::Major::K : cuda::Major::MN;
      struct Variant {
        cuda::GemmLoads loads;
        const char *k_major_name, *mn_major_name;
      };
      const char* const paired_k_major =
          "wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM)";
      const char* const paired_mn_major =
          "wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM), both MN-major";
      for (const Variant& v :
           {Variant{cuda::GemmLoads::CpAsync, "wgmma bf16 (128x128 tiles, 4 stages)",
                    "wgmma bf16 (128x128 tiles, 4 stages), both MN-major"},
            Variant{cuda::GemmLoads::Tma, "wgmma bf16 (128x128 tiles, 4 stages, TMA loads)",
                    "wgmma bf16 (128x128 tiles, 4 stages, TMA loads), both MN-major"},
            Variant{cuda::GemmLoads::TmaWarpSpecialized,
                    "wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA)",
                    "wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA), both MN-major"},
            Variant{cuda::GemmLoads::TmaPaired, paired_k_major, paired_mn_major}}) {
        const double ms = timer.median_ms([&] {
          cuda::gemm_bf16_sm90(m, n, k, bf16_bits(a), bf16_bits(b), out.data<float>(), major,
                               major, v.loads);
        });
        report.add_flops("gemm", shape, k_major ? v.k_major_name : v.mn_major_name, ms, flops);
      }
    }
    if (o.smoke) break;  // one small case runs every row
  }
  CUBLAS_CHECK(cublasDestroy(handle));
}

}  // namespace ddpm::bench
