// Op entry: multi-head self-attention over packed qkv (B, L, 3C). On CUDA, one of two
// kernels (straightforward or fused, set_attention_algorithm); on the CPU, the reference or
// the fast one (set_cpu_kernels).
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu_fast/attention.h"
#include "kernels/cuda/attention.cuh"

namespace ddpm {

using detail::dispatch;

namespace {
AttentionAlgorithm g_algorithm = AttentionAlgorithm::Fused;
}  // namespace

void set_attention_algorithm(AttentionAlgorithm algo) { g_algorithm = algo; }
AttentionAlgorithm attention_algorithm() { return g_algorithm; }

namespace {

#if DDPM_WITH_CUDA
void cuda_forward(const AttentionShape& s, const Tensor& qkv, Tensor& out, Tensor& lse) {
  if (g_algorithm == AttentionAlgorithm::Fused) {
    cuda::attention_fused_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>());
    return;
  }
  const Tensor ws = Tensor::empty(Shape{s.b * s.heads * s.l * s.l}, DType::F32, Device::CUDA);
  cuda::attention_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                          ws.data<float>());
}

// `out` is defined exactly when the forward ran the fused kernel (its backward needs it).
void cuda_backward(const AttentionShape& s, const Tensor& qkv, const Tensor& out,
                   const Tensor& lse, const Tensor& dout, Tensor& dqkv) {
  if (out.defined()) {
    const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
    cuda::attention_fused_backward(s, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                                   dout.data<float>(), dqkv.data<float>(), delta.data<float>());
    return;
  }
  const Tensor ws = Tensor::empty(Shape{2 * s.b * s.heads * s.l * s.l}, DType::F32, Device::CUDA);
  cuda::attention_backward(s, qkv.data<float>(), lse.data<float>(), dout.data<float>(),
                           dqkv.data<float>(), ws.data<float>());
}
#endif

}  // namespace

Tensor attention(const Tensor& qkv, int64_t heads) {
  detail::check_float("attention", "qkv", qkv);
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
  Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty(Shape{s.b, heads, s.l}, qkv.dtype(), qkv.device());
  dispatch("attention", qkv, [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward<T>(s, qkv.data<T>(), out.data<T>(), lse.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(
        cpu_fast::attention_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>()));
  }, [&] { DDPM_CUDA_ONLY(cuda_forward(s, qkv, out, lse)); });
  if (should_record({qkv})) {
    const bool fused = qkv.device() == Device::CUDA && g_algorithm == AttentionAlgorithm::Fused;
    const Tensor saved_out = fused ? out : Tensor();
    tape().record("attention", {out}, [s, qkv, lse, saved_out, gq = grad_ref(qkv)](
                                          const std::vector<Tensor>& g) {
      Tensor dqkv = grad_buffer(gq);
      dispatch("attention backward", qkv, [&](auto tag) {
        using T = decltype(tag);
        cpu::attention_backward<T>(s, qkv.data<T>(), lse.data<T>(), g[0].data<T>(),
                                   dqkv.data<T>());
      }, [&] {
        DDPM_CPU_FAST_ONLY(cpu_fast::attention_backward(s, qkv.data<float>(), lse.data<float>(),
                                                        g[0].data<float>(), dqkv.data<float>()));
      }, [&] { DDPM_CUDA_ONLY(cuda_backward(s, qkv, saved_out, lse, g[0], dqkv)); });
    });
  }
  return out;
}

}  // namespace ddpm
