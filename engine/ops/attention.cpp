// Op entry: multi-head self-attention over packed qkv (B, L, 3C). On CUDA, the straightforward,
// the fused or the cuBLAS-GEMM fp32 kernels (set_attention_algorithm; the GEMMs' P kept or
// recomputed by the size of the matrices), or under Precision::BF16 the bf16 flash kernels
// on tensor cores or the bf16 GEMM version; on the CPU, the reference or the fast one
// (set_cpu_kernels).
#include "engine/flops.h"
#include "engine/ops.h"
#include "engine/op_profile.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu_fast/attention.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_autotune.cuh"
#include "kernels/shape_text.h"

namespace ddpm {

using detail::dispatch;

namespace {
AttentionAlgorithm g_algorithm = AttentionAlgorithm::Auto;
bool g_autotune = false;
}  // namespace

void set_attention_algorithm(AttentionAlgorithm algo) { g_algorithm = algo; }
AttentionAlgorithm attention_algorithm() { return g_algorithm; }
void set_attention_autotune(bool on) { g_autotune = on; }
void set_attention_autotune_unverified(bool on) {
#if DDPM_WITH_CUDA
  cuda::set_attention_autotune_unverified(on);
#else
  (void)on;  // without CUDA there is nothing to time
#endif
}

namespace {

// Which kernels run the op on CUDA: the bf16 flash pair under Precision::BF16 when it takes
// the head dim, else the fp32 version set_attention_algorithm chose (Auto: the GEMMs, at
// every shape: P kept, or recomputed where it would outgrow qkv, attention_gemm_fp32()).
enum class CudaAttention { Straightforward, Fused, Gemm, FlashBf16 };

#if DDPM_WITH_CUDA
CudaAttention cuda_choice(const AttentionShape& s) {
  if (s.bf16_probs && cuda::attention_flash_bf16_supports(s)) return CudaAttention::FlashBf16;
  switch (g_algorithm) {
    case AttentionAlgorithm::Straightforward: return CudaAttention::Straightforward;
    case AttentionAlgorithm::Fused: return CudaAttention::Fused;
    case AttentionAlgorithm::Gemm:
    case AttentionAlgorithm::Auto: break;
  }
  // the GEMM version's fp32 products do not round P and dS to bf16: under bf16 products (a
  // head dim the flash pair does not take) the fused kernel runs, as before the GEMMs
  return s.bf16_probs ? CudaAttention::Fused : CudaAttention::Gemm;
}

void cuda_forward(CudaAttention k, const AttentionShape& s, const Tensor& qkv, Tensor& out,
                  Tensor& lse) {
  if (k == CudaAttention::FlashBf16) {
    cuda::attention_flash_bf16_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>());
  } else if (k == CudaAttention::Fused) {
    cuda::attention_fused_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>());
  } else {
    const Tensor ws = Tensor::empty(Shape{s.b * s.heads * s.l * s.l}, DType::F32, Device::CUDA);
    cuda::attention_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                            ws.data<float>());
  }
}

// `out`: the forward's output (the fused and flash backwards need it). Every version writes
// dqkv outright when it is qkv's first gradient (dqkv.write).
void cuda_backward(CudaAttention k, const AttentionShape& s, const Tensor& qkv, const Tensor& out,
                   const Tensor& lse, const Tensor& dout, const GradTarget& dqkv) {
  float* const dst = dqkv.buffer.data<float>();
  if (k == CudaAttention::Straightforward) {
    const Tensor ws =
        Tensor::empty(Shape{2 * s.b * s.heads * s.l * s.l}, DType::F32, Device::CUDA);
    cuda::attention_backward(s, qkv.data<float>(), lse.data<float>(), dout.data<float>(), dst,
                             ws.data<float>(), dqkv.write);
    return;
  }
  const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
  if (k == CudaAttention::FlashBf16) {
    cuda::attention_flash_bf16_backward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                                        dout.data<float>(), dst, delta.data<float>(), dqkv.write);
  } else {
    cuda::attention_fused_backward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                                   dout.data<float>(), dst, delta.data<float>(), dqkv.write);
  }
}
#endif

// The shape of attention(qkv, heads) after its checks (any dtype).
AttentionShape checked_shape(const Tensor& qkv, int64_t heads) {
  detail::check_ndim("attention", "qkv", qkv, 3);
  AttentionShape s;
  s.b = qkv.shape()[0];
  s.l = qkv.shape()[1];
  s.heads = heads;
  CHECK(qkv.shape()[2] % 3 == 0,
        "op 'attention': qkv " << qkv.describe() << " must be (B, L, 3C)");
  s.c = qkv.shape()[2] / 3;
  CHECK(heads >= 1 && s.c % heads == 0, "op 'attention': " << s.c << " channels cannot be split "
                                                            << "into " << heads << " heads");
  return s;
}

// True when the bf16 flash kernels take bf16 qkv as it is: on a GPU, under precision bf16,
// at a head dim they support.
bool flash_reads_bf16(const Tensor& qkv, int64_t heads) {
#if DDPM_WITH_CUDA
  if (!detail::cuda_bf16({qkv}) || precision() != Precision::BF16) return false;
  AttentionShape s = checked_shape(qkv, heads);
  s.bf16_probs = true;
  return cuda::attention_flash_bf16_supports(s);
#else
  (void)qkv, (void)heads;
  return false;
#endif
}

// qkv's storage as the GEMM version's entries take it: fp32, or bf16 bits.
template <class A>
A* stored(const Tensor& t) {
  if constexpr (sizeof(A) == 2)
    return detail::bf16_bits(t);
  else
    return t.data<float>();
}

// attention through cuBLAS's GEMMs (kernels/cuda/attention_gemm.cu), on bf16 activations
// (A = uint16_t) or fp32 ones (A = float): the forward keeps P (B H L L, stored as qkv is)
// for the backward; S, dP and dS are scratch (in fp32, P over S and dS over dP: one buffer
// each), and lse is not written (the backward reads P, not lse).
template <class A>
Tensor attention_gemm(const AttentionShape& s, const Tensor& qkv) {
  constexpr bool kFp32 = sizeof(A) == 4;
  const DType storage = qkv.dtype();
  Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, storage, Device::CUDA);
  const Shape matrices{s.b * s.heads * s.l * s.l};  // attention_gemm_matrix_elements
  Tensor p = Tensor::empty(matrices, storage, Device::CUDA);
  {
    OpTimer timer("attention", true);
    const Tensor scores = kFp32 ? p : Tensor::empty(matrices, DType::F32, Device::CUDA);
    DDPM_CUDA_ONLY(cuda::attention_gemm_forward(s, stored<A>(qkv), stored<A>(out),
                                                /*lse=*/nullptr, stored<A>(p),
                                                scores.data<float>()));
  }
  if (should_record({qkv})) {
    tape().record("attention", {out}, [s, qkv, p, matrices, storage, gq = grad_ref(qkv)](
                                          const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return attention_shape_text(s); });
      count_matmul_flops(4 * attention_flops(s));
      const GradTarget dqkv = grad_target(gq);  // written outright if it is the first
      OpTimer timer("attention backward", true);
      const Tensor dp = Tensor::empty(matrices, DType::F32, Device::CUDA);
      const Tensor ds = kFp32 ? dp : Tensor::empty(matrices, storage, Device::CUDA);
      DDPM_CUDA_ONLY(cuda::attention_gemm_backward(
          s, stored<A>(qkv), stored<A>(p), stored<A>(g[0]), stored<A>(dqkv.buffer),
          dp.data<float>(), stored<A>(ds), dqkv.write));
    });
  }
  return out;
}

#if DDPM_WITH_CUDA
// fp32 attention through cuBLAS's SGEMMs with P recomputed (attention_gemm.cu): the batch in
// chunks of attention_gemm_fp32_chunk samples, each chunk's matrices in scratch that lives
// for one pass; the tape keeps qkv alone, and the backward runs each chunk's S products and
// softmax again.
Tensor attention_gemm_recomputed(const AttentionShape& s, const Tensor& qkv) {
  const int64_t chunk = cuda::attention_gemm_fp32_chunk(s);
  AttentionShape first = s;
  first.b = chunk;
  const Shape matrices{cuda::attention_gemm_matrix_elements(first)};  // one chunk's
  Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::F32, Device::CUDA);
  {
    OpTimer timer("attention", true);
    const Tensor scratch = Tensor::empty(matrices, DType::F32, Device::CUDA);
    cuda::attention_gemm_recompute_forward(s, chunk, qkv.data<float>(), out.data<float>(),
                                           /*lse=*/nullptr, scratch.data<float>());
  }
  if (should_record({qkv})) {
    tape().record("attention", {out}, [s, qkv, chunk, matrices, gq = grad_ref(qkv)](
                                          const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return attention_shape_text(s); });
      count_matmul_flops(4 * attention_flops(s));  // the recomputed S products not counted
      const GradTarget dqkv = grad_target(gq);     // written outright if it is the first
      OpTimer timer("attention backward", true);
      const Tensor p = Tensor::empty(matrices, DType::F32, Device::CUDA);
      const Tensor dp = Tensor::empty(matrices, DType::F32, Device::CUDA);
      cuda::attention_gemm_recompute_backward(s, chunk, qkv.data<float>(), g[0].data<float>(),
                                              dqkv.buffer.data<float>(), p.data<float>(),
                                              dp.data<float>(), dqkv.write);
    });
  }
  return out;
}
#endif

// fp32 attention through cuBLAS's SGEMMs: P kept for the backward while the batch's
// matrices are at most twice qkv's size (L <= 6 d), else recomputed by chunks.
Tensor attention_gemm_fp32(const AttentionShape& s, const Tensor& qkv) {
#if DDPM_WITH_CUDA
  if (!cuda::attention_gemm_fp32_keeps_p(s)) return attention_gemm_recomputed(s, qkv);
#endif
  return attention_gemm<float>(s, qkv);
}

// attention on bf16 activations with the bf16 flash kernels, or through cuBLAS's GEMMs where
// those are faster, or on the flash pair on wgmma (by the rule, or timed:
// set_attention_autotune; wgmma only timed): qkv, out and their gradients bf16; lse fp32.
Tensor attention_bf16_activations(const Tensor& qkv, int64_t heads) {
  AttentionShape s = checked_shape(qkv, heads);
  const OpShape op_shape([&] { return attention_shape_text(s); });
  s.bf16_probs = true;
  count_matmul_flops(2 * attention_flops(s));
  bool by_gemm = false;  // the flash backward's dq by GEMM, dS through memory (attention.cuh)
#if DDPM_WITH_CUDA
  const cuda::AttentionBf16Path path =
      g_autotune ? cuda::attention_bf16_path_autotuned(s, should_record({qkv}))
                 : cuda::attention_bf16_path_by_rule(s);
  if (path == cuda::AttentionBf16Path::Gemm) return attention_gemm<uint16_t>(s, qkv);
  by_gemm = path == cuda::AttentionBf16Path::FlashDqByGemm;
  const bool on_wgmma = path == cuda::AttentionBf16Path::FlashWgmma;
#else
  const bool on_wgmma = false;
#endif
  Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::BF16, Device::CUDA);
  Tensor lse = Tensor::empty(Shape{s.b, heads, s.l}, DType::F32, Device::CUDA);
  using detail::bf16_bits;
  {
    OpTimer timer("attention", true);
    DDPM_CUDA_ONLY(if (on_wgmma) cuda::attention_flash_wgmma_forward(
                       s, bf16_bits(qkv), bf16_bits(out), lse.data<float>());
                   else cuda::attention_flash_bf16_forward(s, bf16_bits(qkv), bf16_bits(out),
                                                           lse.data<float>()));
  }
  if (should_record({qkv})) {
    tape().record("attention", {out}, [s, qkv, out, lse, by_gemm, on_wgmma, gq = grad_ref(qkv)](
                                          const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return attention_shape_text(s); });
      count_matmul_flops(4 * attention_flops(s));
      const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
      const GradTarget dqkv = grad_target(gq);  // written outright if it is the first
      OpTimer timer("attention backward", true);
      DDPM_CUDA_ONLY(
          const Tensor ds = by_gemm || on_wgmma
                                ? Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)},
                                                DType::BF16, Device::CUDA)
                                : Tensor();
          if (on_wgmma) cuda::attention_flash_wgmma_backward(
              s, bf16_bits(qkv), bf16_bits(out), lse.data<float>(), bf16_bits(g[0]),
              bf16_bits(dqkv.buffer), delta.data<float>(), bf16_bits(ds), dqkv.write);
          else cuda::attention_flash_bf16_backward(
              s, bf16_bits(qkv), bf16_bits(out), lse.data<float>(), bf16_bits(g[0]),
              bf16_bits(dqkv.buffer), delta.data<float>(), dqkv.write,
              by_gemm ? bf16_bits(ds) : nullptr));
    });
  }
  return out;
}

}  // namespace

Tensor attention(const Tensor& qkv, int64_t heads) {
  CHECK(qkv.defined(), "op 'attention': qkv is undefined");
  if (flash_reads_bf16(qkv, heads)) return attention_bf16_activations(qkv, heads);
  if (detail::any_bf16({qkv})) return cast(attention(detail::widen(qkv), heads), DType::BF16);
  detail::check_float("attention", "qkv", qkv);
  AttentionShape s = checked_shape(qkv, heads);
  const OpShape op_shape([&] { return attention_shape_text(s); });
  // Under bf16 the two products multiply bf16 operands: q, k, v and dout rounded here (the
  // flash kernels round them themselves), P and dS inside the kernels (bf16_probs).
  s.bf16_probs = precision() == Precision::BF16 && qkv.dtype() == DType::F32;
  const bool on_gpu = qkv.device() == Device::CUDA;
  CudaAttention kernels = CudaAttention::Fused;
#if DDPM_WITH_CUDA
  if (on_gpu) kernels = cuda_choice(s);
#endif
  if (on_gpu && kernels == CudaAttention::Gemm) {
    count_matmul_flops(2 * attention_flops(s));
    return attention_gemm_fp32(s, qkv);
  }
  const bool flash = on_gpu && kernels == CudaAttention::FlashBf16;
  // bf16 is the only rounding attention takes (TF32 leaves it fp32, as PyTorch's allow_tf32
  // leaves its softmax path), so the operand is rounded only then.
  const bool round_here = s.bf16_probs && !flash;
  const auto operand = [round_here](const Tensor& t) {  // by value: the tape keeps it
    return round_here ? detail::matmul_operand(t) : t;
  };
  const Tensor qkv_op = operand(qkv);
  Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty(Shape{s.b, heads, s.l}, qkv.dtype(), qkv.device());
  count_matmul_flops(2 * attention_flops(s));  // S = QK^T, out = PV
  dispatch("attention", qkv, [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward<T>(s, qkv_op.data<T>(), out.data<T>(), lse.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::attention_forward(s, qkv_op.data<float>(), out.data<float>(),
                                                   lse.data<float>()));
  }, [&] { DDPM_CUDA_ONLY(cuda_forward(kernels, s, qkv_op, out, lse)); });
  if (should_record({qkv})) {
    const Tensor saved_out = on_gpu && kernels != CudaAttention::Straightforward ? out : Tensor();
    tape().record("attention", {out}, [s, kernels, operand, qkv_op, lse, saved_out,
                                       gq = grad_ref(qkv)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return attention_shape_text(s); });
      // the GPU's kernels write dqkv outright if it is the first gradient; the CPU's add
      const GradTarget dqkv_to = grad_target(gq);
      const Tensor dqkv = detail::buffer_on(dqkv_to, qkv_op.device());
      count_matmul_flops(4 * attention_flops(s));  // dV = P^T dO, dP = dO V^T, dQ, dK
      const Tensor dout = operand(g[0]);
      dispatch("attention backward", qkv_op, [&](auto tag) {
        using T = decltype(tag);
        cpu::attention_backward<T>(s, qkv_op.data<T>(), lse.data<T>(), dout.data<T>(),
                                   dqkv.data<T>());
      }, [&] {
        DDPM_CPU_FAST_ONLY(cpu_fast::attention_backward(s, qkv_op.data<float>(), lse.data<float>(),
                                                        dout.data<float>(), dqkv.data<float>()));
      }, [&] { DDPM_CUDA_ONLY(cuda_backward(kernels, s, qkv_op, saved_out, lse, dout, dqkv_to)); });
    });
  }
  return out;
}

}  // namespace ddpm
