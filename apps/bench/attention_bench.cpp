// kernel-bench attention: the straightforward and the fused CUDA attention, forward and
// backward, the straightforward one's steps on cuBLAS's fp32 SGEMMs (the op's fp32 choice: P
// kept where L <= 6 d, and recomputed by chunks of samples, timed at every shape), and the bf16
// flash forward and backward (tensor cores; TFLOP/s against the bf16 peak), on fp32 tensors
// (converted inside the kernels) and on bf16 tensors as they are (activations: bf16; the
// pair also on Hopper's wgmma, its rows alone under --only-sm90; the
// backward also with dq by cuBLAS from dS in memory; and the whole attention through cuBLAS's
// GEMMs with the L x L matrices in memory), at the CIFAR-10 model's 16x16 attention (L = 256,
// one head of d = 256), the same map split into 2 heads of 128 and 4 of 64 (the flash
// backward's other block shape: one warp per 16 rows, docs/kernels.md), and a 32x32 map with 4
// heads (L = 1024, d = 32), next to cuBLAS floors.
//
// FLOPs: forward 4 B H L^2 d (QK^T and PV); backward counted as 8 B H L^2 d (dV, dP, dQ, dK;
// the recomputation of S is not counted, the usual convention), so TFLOP/s compare across
// versions. The cuBLAS rows time only the two forward GEMMs (strided-batched, no softmax):
// fp32 math on fp32 tensors, and bf16 tensors with fp32 sums (P stored in bf16, as a bf16
// attention built from library GEMMs would): floors for any attention built that way.
// cuDNN's fused attention (SDPA) is measured through PyTorch, which reaches it by
// cudnn-frontend (not installed here): scripts/attention_reference.py prints its rows under
// the same shape names, and scripts/gpu-check.sh sets the two side by side.
#include <cublas_v2.h>

#include <cstdio>
#include <string>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/cuda_check.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/gemm_sm90.cuh"

namespace ddpm::bench {

namespace {

// S = Q K^T and O = P V for every (batch, head) with cuBLAS on the packed layout, elements of
// `type` (fp32, or bf16 with fp32 sums and P rounded to bf16). Row-major X (ld) is
// column-major X^T, so S^T = K Q^T is gemm(T, N) on K and Q, and O^T = V^T P^T is gemm(N, N)
// on V and P. One strided-batched call per head (heads are not one stride apart from batch
// to batch).
void cublas_floor(cublasHandle_t h, const AttentionShape& s, cudaDataType type, const void* qkv,
                  void* p, void* out) {
  const int l = static_cast<int>(s.l), d = static_cast<int>(s.head_dim());
  const int ld_qkv = static_cast<int>(3 * s.c), ld_out = static_cast<int>(s.c);
  const long long stride_qkv = static_cast<long long>(s.l) * 3 * s.c;
  const long long stride_p = static_cast<long long>(s.l) * s.l;
  const long long stride_out = static_cast<long long>(s.l) * s.c;
  const size_t size = type == CUDA_R_32F ? 4 : 2;
  const auto at = [size](const void* base, int64_t elems) {
    return static_cast<const char*>(base) + elems * static_cast<int64_t>(size);
  };
  const auto at_mut = [size](void* base, int64_t elems) {
    return static_cast<char*>(base) + elems * static_cast<int64_t>(size);
  };
  const float one = 1.0f, zero = 0.0f;
  for (int64_t hd = 0; hd < s.heads; ++hd) {
    const void* q = at(qkv, hd * d);
    const void* k = at(qkv, s.c + hd * d);
    const void* v = at(qkv, 2 * s.c + hd * d);
    void* ph = at_mut(p, hd * s.b * stride_p);
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h, CUBLAS_OP_T, CUBLAS_OP_N, l, l, d, &one, k, type, ld_qkv, stride_qkv, q, type, ld_qkv,
        stride_qkv, &zero, ph, type, l, stride_p, static_cast<int>(s.b), CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h, CUBLAS_OP_N, CUBLAS_OP_N, d, l, l, &one, v, type, ld_qkv, stride_qkv, ph, type, l,
        stride_p, &zero, at_mut(out, hd * d), type, ld_out, stride_out, static_cast<int>(s.b),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace

void bench_attention(const Options& o, Timer& timer, Report& report) {
  struct Case {
    const char* name;
    int64_t l, c, heads;
  };
  const std::vector<Case> cases =
      o.smoke ? std::vector<Case>{{"smoke, 1 head", 80, 256, 1}, {"smoke, 4 heads", 96, 128, 4}}
              : std::vector<Case>{{"16x16, 1 head", 256, 256, 1},
                                  {"16x16, 2 heads", 256, 256, 2},  // d 128
                                  {"16x16, 4 heads", 256, 256, 4},  // d 64
                                  {"32x32, 4 heads", 1024, 128, 4}};
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // fp32 stays fp32
  for (const Case& c : cases) {
    AttentionShape s;
    s.b = o.batch;
    s.l = c.l;
    s.c = c.c;
    s.heads = c.heads;
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s B%lld L%lld d%lld", c.name,
                  static_cast<long long>(s.b), static_cast<long long>(s.l),
                  static_cast<long long>(s.head_dim()));
    // the shape's rows by name for a profiler: "attention 16x16, 1 head B128 L256 d256"
    // (kernel-bench --once; scripts/gpu-check.sh's profile stage)
    const ProfileRange shape_range(("attention " + std::string(shape)).c_str());
    const double fwd_flops = 4.0 * s.b * s.heads * s.l * s.l * s.head_dim();
    const Tensor qkv = scale(randn(Shape{s.b, s.l, 3 * s.c}, 1, 5, Device::CUDA), 0.3);
    const Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::F32, Device::CUDA);
    const Tensor dout = randn(out.shape(), 1, 6, Device::CUDA);
    const Tensor dqkv = Tensor::zeros(qkv.shape(), DType::F32, Device::CUDA);
    const Tensor lse = Tensor::empty(Shape{s.b, s.heads, s.l}, DType::F32, Device::CUDA);
    const Tensor ws = Tensor::empty(Shape{2 * s.b * s.heads * s.l * s.l}, DType::F32, Device::CUDA);
    const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
    const float* q = qkv.data<float>();
    // bf16 tensors as they are (activations: bf16)
    const Tensor qkv16 = cast(qkv, DType::BF16), dout16 = cast(dout, DType::BF16);
    const Tensor out16 = Tensor::zeros(out.shape(), DType::BF16, Device::CUDA);
    const Tensor dqkv16 = Tensor::zeros(qkv.shape(), DType::BF16, Device::CUDA);
    // The forward on Hopper's wgmma (a process of its own under --only-sm90), beside the
    // mma.sync forward's row on the same bf16 tensors below.
    if (o.wants(true) && cuda::gemm_sm90_available() &&
        cuda::attention_flash_wgmma_supports(s)) {
      const char* v = "flash bf16 (wgmma), bf16 tensors";
      report.add_flops("attention fwd", shape, v, timer.median_ms([&] {
        cuda::attention_flash_wgmma_forward(s, bf16_bits(qkv16), bf16_bits(out16),
                                            lse.data<float>());
      }), fwd_flops);
      // its backward: dS^T through memory and dq by cuBLAS, as the mma.sync pair's "dq by
      // cuBLAS" row
      const Tensor ds = Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)},
                                      DType::BF16, Device::CUDA);
      report.add_flops("attention bwd", shape, v, timer.median_ms([&] {
        cuda::attention_flash_wgmma_backward(s, bf16_bits(qkv16), bf16_bits(out16),
                                             lse.data<float>(), bf16_bits(dout16),
                                             bf16_bits(dqkv16), delta.data<float>(),
                                             bf16_bits(ds));
      }), 2 * fwd_flops);
    }
    if (!o.wants(false)) continue;
    report.add_flops("attention fwd", shape, "straightforward", timer.median_ms([&] {
      cuda::attention_forward(s, q, out.data<float>(), lse.data<float>(), ws.data<float>());
    }), fwd_flops);
    report.add_flops("attention bwd", shape, "straightforward", timer.median_ms([&] {
      cuda::attention_backward(s, q, lse.data<float>(), dout.data<float>(), dqkv.data<float>(),
                               ws.data<float>());
    }), 2 * fwd_flops);
    report.add_flops("attention fwd", shape, "fused", timer.median_ms([&] {
      cuda::attention_fused_forward(s, q, out.data<float>(), lse.data<float>());
    }), fwd_flops);
    report.add_flops("attention bwd", shape, "fused", timer.median_ms([&] {
      cuda::attention_fused_backward(s, q, out.data<float>(), lse.data<float>(),
                                     dout.data<float>(), dqkv.data<float>(), delta.data<float>());
    }), 2 * fwd_flops);
    {  // cuBLAS's SGEMMs, P over S in one half of ws and dS over dP in the other, as the op
       // calls them (P kept: its choice in fp32 math where L <= 6 d, the 16x16 shapes here)
      float* const p = ws.data<float>();
      float* const dp = p + s.b * s.heads * s.l * s.l;
      const char* v = "fp32 GEMMs (cuBLAS) and row kernels";
      report.add_flops("attention fwd", shape, v, timer.median_ms([&] {
        cuda::attention_gemm_forward(s, q, out.data<float>(), lse.data<float>(), p, p);
      }), fwd_flops);
      report.add_flops("attention bwd", shape, v, timer.median_ms([&] {
        cuda::attention_gemm_backward(s, q, p, dout.data<float>(), dqkv.data<float>(), dp, dp);
      }), 2 * fwd_flops);
      // P recomputed in the backward, in the op's chunks of samples (its choice past L = 6 d:
      // the 32x32 shape here, in chunks of 6 B d / L; at the others one chunk, the batch):
      // the price of recomputing, beside the rows above
      const int64_t chunk = cuda::attention_gemm_fp32_chunk(s);
      const char* r = "fp32 GEMMs (cuBLAS) and row kernels, P recomputed by chunks";
      report.add_flops("attention fwd", shape, r, timer.median_ms([&] {
        cuda::attention_gemm_recompute_forward(s, chunk, q, out.data<float>(), lse.data<float>(),
                                               p);
      }), fwd_flops);
      report.add_flops("attention bwd", shape, r, timer.median_ms([&] {
        cuda::attention_gemm_recompute_backward(s, chunk, q, dout.data<float>(),
                                                dqkv.data<float>(), p, dp);
      }), 2 * fwd_flops);
    }
    if (cuda::attention_flash_bf16_supports(s)) {  // judged against the bf16 tensor-core peak
      report.add_flops("attention fwd", shape, "flash bf16 (mma.sync)", timer.median_ms([&] {
        cuda::attention_flash_bf16_forward(s, q, out.data<float>(), lse.data<float>());
      }), fwd_flops);
      report.add_flops("attention bwd", shape, "flash bf16 (mma.sync)", timer.median_ms([&] {
        cuda::attention_flash_bf16_backward(s, q, out.data<float>(), lse.data<float>(),
                                            dout.data<float>(), dqkv.data<float>(),
                                            delta.data<float>());
      }), 2 * fwd_flops);
    }
    report.add_flops("attention fwd", shape, "cuBLAS GEMMs only", timer.median_ms([&] {
      cublas_floor(handle, s, CUDA_R_32F, q, ws.data<float>(), out.data<float>());
    }), fwd_flops);
    // bf16 tensors as they are (activations: bf16): the flash pair reads and writes them
    // without a conversion, next to the bf16 GEMM floor and cuDNN's SDPA (through PyTorch).
    if (cuda::attention_flash_bf16_supports(s)) {
      const char* v = "flash bf16 (mma.sync), bf16 tensors";
      report.add_flops("attention fwd", shape, v, timer.median_ms([&] {
        cuda::attention_flash_bf16_forward(s, bf16_bits(qkv16), bf16_bits(out16),
                                           lse.data<float>());
      }), fwd_flops);
      report.add_flops("attention bwd", shape, v, timer.median_ms([&] {
        cuda::attention_flash_bf16_backward(s, bf16_bits(qkv16), bf16_bits(out16),
                                            lse.data<float>(), bf16_bits(dout16),
                                            bf16_bits(dqkv16), delta.data<float>());
      }), 2 * fwd_flops);
      // dS through memory and dq by cuBLAS (the op's choice for the flash pair where
      // L <= 6 d: of these shapes, the 16x16 map's 4 heads of 64), at every shape
      const Tensor ds = Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)},
                                      DType::BF16, Device::CUDA);
      const char* by_gemm = "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS";
      report.add_flops("attention bwd", shape, by_gemm, timer.median_ms([&] {
        cuda::attention_flash_bf16_backward(s, bf16_bits(qkv16), bf16_bits(out16),
                                            lse.data<float>(), bf16_bits(dout16),
                                            bf16_bits(dqkv16), delta.data<float>(),
                                            GradWrite::Accumulate, bf16_bits(ds));
      }), 2 * fwd_flops);
    }
    // The same through cuBLAS's GEMMs, the L x L matrices in memory (the op's choice for
    // head dims of 128 and up at L <= 6 d): its P kept from the forward for the backward.
    {
      const Shape matrices{cuda::attention_gemm_matrix_elements(s)};
      const Tensor p16 = Tensor::empty(matrices, DType::BF16, Device::CUDA);
      const Tensor scratch = Tensor::empty(matrices, DType::F32, Device::CUDA);  // S, dP
      const Tensor ds16 = Tensor::empty(matrices, DType::BF16, Device::CUDA);
      const char* v = "bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors";
      report.add_flops("attention fwd", shape, v, timer.median_ms([&] {
        cuda::attention_gemm_forward(s, bf16_bits(qkv16), bf16_bits(out16),
                                     lse.data<float>(), bf16_bits(p16),
                                     scratch.data<float>());
      }), fwd_flops);
      report.add_flops("attention bwd", shape, v, timer.median_ms([&] {
        cuda::attention_gemm_backward(s, bf16_bits(qkv16), bf16_bits(p16),
                                      bf16_bits(dout16), bf16_bits(dqkv16),
                                      scratch.data<float>(), bf16_bits(ds16));
      }), 2 * fwd_flops);
    }
    report.add_flops("attention fwd", shape, "cuBLAS bf16 GEMMs only", timer.median_ms([&] {
      cublas_floor(handle, s, CUDA_R_16BF, qkv16.raw(), ws.raw(), out16.raw());
    }), fwd_flops);
  }
  CUBLAS_CHECK(cublasDestroy(handle));
}

}  // namespace ddpm::bench
