// Op entries for bf16 storage: cast between f32 and bf16, the accumulation of gradients
// across the two, and the fallback that runs an op without a bf16 kernel on f32 copies.
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cast.h"
#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace ddpm {

namespace {
DType g_activation_dtype = DType::F32;
}  // namespace

void set_activation_dtype(DType d) {
  CHECK(d == DType::F32 || d == DType::BF16,
        "activations are stored in f32 or bf16, not " << dtype_name(d));
  g_activation_dtype = d;
}
DType activation_dtype() { return g_activation_dtype; }

namespace detail {

uint16_t* bf16_bits(const Tensor& t) { return reinterpret_cast<uint16_t*>(t.data<bf16>()); }

bool any_bf16(std::initializer_list<Tensor> ts) {
  for (const Tensor& t : ts)
    if (t.defined() && t.dtype() == DType::BF16) return true;
  return false;
}

bool cuda_bf16(std::initializer_list<Tensor> ts) {
  bool any = false;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (t.dtype() != DType::BF16 || t.device() != Device::CUDA) return false;
    any = true;
  }
  return any;
}

Tensor widen(const Tensor& t) {
  return t.defined() && t.dtype() == DType::BF16 ? cast(t, DType::F32) : t;
}

// dst += alpha src with dst or src (or both) bf16, the other f32.
void accumulate_stored(const Tensor& dst, const Tensor& src, double alpha) {
  const auto a = static_cast<float>(alpha);
  const int64_t n = dst.numel();
  const bool dst16 = dst.dtype() == DType::BF16, src16 = src.dtype() == DType::BF16;
  OpTimer timer("accumulate", dst.device() == Device::CUDA);
  if (dst.device() == Device::CUDA) {
    DDPM_CUDA_ONLY(if (dst16 && src16) cuda::axpy_stored(n, a, bf16_bits(src), bf16_bits(dst));
                   else if (dst16) cuda::axpy_stored(n, a, src.data<float>(), bf16_bits(dst));
                   else cuda::axpy_stored(n, a, bf16_bits(src), dst.data<float>()));
    return;
  }
  if (dst16 && src16) cpu::axpy_stored(n, a, bf16_bits(src), bf16_bits(dst));
  else if (dst16) cpu::axpy_stored(n, a, src.data<float>(), bf16_bits(dst));
  else cpu::axpy_stored(n, a, bf16_bits(src), dst.data<float>());
}

}  // namespace detail

Tensor cast(const Tensor& x, DType dtype) {
  CHECK(x.defined(), "op 'cast': x is undefined");
  if (x.dtype() == dtype) return x;
  CHECK((x.dtype() == DType::F32 && dtype == DType::BF16) ||
            (x.dtype() == DType::BF16 && dtype == DType::F32),
        "op 'cast': converts between f32 and bf16, not " << x.describe() << " to "
                                                        << dtype_name(dtype));
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  const int64_t n = x.numel();
  const bool narrow = dtype == DType::BF16;
  {
    OpTimer timer("cast", x.device() == Device::CUDA);
    if (x.device() == Device::CUDA) {
      DDPM_CUDA_ONLY(if (narrow) cuda::to_bf16_bits(n, x.data<float>(), detail::bf16_bits(y));
                     else cuda::from_bf16_bits(n, detail::bf16_bits(x), y.data<float>()));
    } else if (narrow) {
      cpu::to_bf16_bits(n, x.data<float>(), detail::bf16_bits(y));
    } else {
      cpu::from_bf16_bits(n, detail::bf16_bits(x), y.data<float>());
    }
  }
  if (should_record({x})) {
    tape().record("cast", {y}, [gx = grad_ref(x)](const std::vector<Tensor>& g) {
      // the first gradient is g converted (no zero fill); later ones are added in fp32
      detail::add_to_grad(gx, g[0], detail::GradSource::Borrowed);
    });
  }
  return y;
}

}  // namespace ddpm
