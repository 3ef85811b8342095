// Op entry: linear, y (..., N) = x (..., K) w (K, N) + b (N).
#include "engine/flops.h"
#include "engine/ops.h"
#include "engine/op_profile.h"
#include "engine/ops/op_util.h"
#include "engine/weight_copy.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu_fast/linear.h"
#include "kernels/cuda/linear.cuh"
#include "kernels/shape_text.h"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

namespace {

// On the GPU under Precision::BF16 / TF32 (f32 tensors): the tensor-core GEMMs.
bool bf16_gemm(const Tensor& x) {
  return x.device() == Device::CUDA && detail::rounds_operands(x) &&
         precision() == Precision::BF16;
}
bool tf32_gemm(const Tensor& x) {
  return x.device() == Device::CUDA && detail::rounds_operands(x) &&
         precision() == Precision::TF32;
}

// The gradient buffers a backward writes (undefined where no gradient is wanted), its
// matrix-product FLOPs counted.
struct Grads {
  Tensor dx, dw, db;
  GradWrite dx_write = GradWrite::Accumulate;  // the GPU's: Assign if x's first gradient
};
Grads backward_grads(const LinearShape& s, const Tensor& x, const GradRef& gx, const GradRef& gw,
                     const GradRef& gb) {
  const GradTarget dx = grad_target(gx);
  Grads g{detail::buffer_on(dx, x.device()), detail::grad_or_null(gw), detail::grad_or_null(gb),
          dx.write};
  count_matmul_flops(linear_flops(s) * ((g.dx.defined() ? 1 : 0) + (g.dw.defined() ? 1 : 0)));
  return g;
}

// The shape of linear(x, w, b) after the checks of shapes and devices (dtypes are each
// variant's).
LinearShape checked_shape(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_ndim("linear", "w", w, 2);
  CHECK(x.shape().ndim() >= 1 && x.shape().last() == w.shape()[0],
        "op 'linear': x " << x.describe() << " has last dimension " << x.shape().last()
                          << " but w " << w.describe() << " expects " << w.shape()[0]);
  const LinearShape s{x.shape().rows(), w.shape()[0], w.shape()[1]};
  CHECK(w.device() == x.device() && (!b.defined() || b.device() == x.device()),
        "op 'linear': w " << w.describe() << " and b must be on the device of x " << x.describe());
  CHECK(!b.defined() || b.shape() == Shape{s.n},
        "op 'linear': b " << b.describe() << " must be (" << s.n << ")");
  return s;
}

// bf16 activations on the GPU (x bf16, w and b f32, precision bf16): cublasGemmEx reads x and
// dy as they are (kernels/cuda/linear.cuh); y and dx bf16, dw and db fp32.
Tensor linear_bf16_activations(const Tensor& x, const Tensor& w, const Tensor& b) {
  const LinearShape s = checked_shape(x, w, b);
  const OpShape op_shape([&] { return linear_shape_text(s); });
  Tensor y = Tensor::empty(x.shape().with_last(s.n), DType::BF16, x.device());
  count_matmul_flops(linear_flops(s));
  using detail::bf16_bits;
  {
    OpTimer timer("linear", true);
    DDPM_CUDA_ONLY(
        const Tensor ws = detail::cuda_workspace(cuda::linear_bf16_activations_forward_workspace(s));
        cuda::linear_bf16_forward(s, bf16_bits(x), w.data<float>(), ptr_or_null<float>(b),
                                  bf16_bits(y), ws.data<float>(), bf16_copy_of(w),
                                  b.defined() ? bf16_copy_of(b) : nullptr));
  }
  if (should_record({x, w, b})) {
    tape().record("linear", {y}, [s, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return linear_shape_text(s); });
      const Grads grads = backward_grads(s, x, gx, gw, gb);
      const Tensor &dx = grads.dx, &dw = grads.dw, &db = grads.db;
      OpTimer timer("linear backward", true);
      DDPM_CUDA_ONLY(
          const Tensor ws =
              detail::cuda_workspace(cuda::linear_bf16_activations_backward_workspace(s));
          cuda::linear_bf16_backward(s, bf16_bits(x), w.data<float>(), bf16_bits(g[0]),
                                     dx.defined() ? bf16_bits(dx) : nullptr,
                                     ptr_or_null<float>(dw), ptr_or_null<float>(db),
                                     ws.data<float>(), bf16_copy_of(w), grads.dx_write));
    });
  }
  return y;
}

// The f32 op. bias_in_bf16: its output is to be stored in bf16, so the bias is added as its
// bf16 value, as the GPU adds it there (cuBLASLt's epilogue takes a bias of the output's type:
// kernels/cuda/linear.cuh); its gradient is the fp32 sum of dy all the same.
Tensor linear_f32(const Tensor& x, const Tensor& w, const Tensor& b, bool bias_in_bf16);

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  CHECK(x.defined() && w.defined(), "op 'linear': x and w must be defined");
  if (detail::cuda_bf16({x}) && !detail::any_bf16({w, b}) && precision() == Precision::BF16)
    return linear_bf16_activations(x, w, b);
  if (detail::any_bf16({x, w, b}))  // the CPU: the f32 op on widened copies, the reference
    return cast(linear_f32(detail::widen(x), detail::widen(w), detail::widen(b), true),
                DType::BF16);
  return linear_f32(x, w, b, false);
}

namespace {

Tensor linear_f32(const Tensor& x, const Tensor& w, const Tensor& b, bool bias_in_bf16) {
  detail::check_float("linear", "x", x);
  detail::check_compatible("linear", "w", w, "x", x);
  if (b.defined()) detail::check_compatible("linear", "b", b, "x", x);
  const LinearShape s = checked_shape(x, w, b);
  const OpShape op_shape([&] { return linear_shape_text(s); });
  Tensor y = Tensor::empty(x.shape().with_last(s.n), x.dtype(), x.device());
  count_matmul_flops(linear_flops(s));
  // Under Precision::BF16 / TF32 the CPU multiplies rounded operands in fp32 (exact products,
  // fp32 sums: the numbers of a bf16 / TF32 GEMM). The GPU does the same on tensor cores:
  // bf16 copies of the operands through cublasGemmEx, or TF32-rounded operands through SGEMM
  // in TF32 math (kernels/cuda/linear.cu).
  const bool gpu_bf16 = bf16_gemm(x);
  const Tensor xo = gpu_bf16 ? x : detail::matmul_operand(x);
  const Tensor wo = gpu_bf16 ? w : detail::matmul_operand(w);
  const Tensor bo = bias_in_bf16 && b.defined() ? detail::bf16_rounded(b) : b;
  dispatch("linear", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::linear_forward<T>(s, xo.data<T>(), wo.data<T>(), ptr_or_null<T>(bo), y.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::linear_forward(s, xo.data<float>(), wo.data<float>(),
                                                ptr_or_null<float>(bo), y.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(
        if (gpu_bf16) {
          const Tensor ws = detail::cuda_workspace(cuda::linear_bf16_forward_workspace(s));
          cuda::linear_bf16_forward(s, x.data<float>(), w.data<float>(), ptr_or_null<float>(bo),
                                    y.data<float>(), ws.data<float>(), bf16_copy_of(w));
        } else {
          cuda::linear_forward(s, xo.data<float>(), wo.data<float>(), ptr_or_null<float>(bo),
                               y.data<float>(), tf32_gemm(x));
        });
  });
  if (should_record({x, w, b})) {
    tape().record("linear", {y}, [s, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return linear_shape_text(s); });
      const Grads grads = backward_grads(s, x, gx, gw, gb);
      const Tensor &dx = grads.dx, &dw = grads.dw, &db = grads.db;
      // bf16 / tf32: dx and dw from rounded operands, db from the fp32 incoming gradient (a
      // second call). The GPU's bf16 GEMMs round x, w and dy themselves and sum db from the
      // fp32 dy: one call on the unrounded operands.
      const bool bf16_on_gpu = bf16_gemm(x);
      const bool split = detail::rounds_operands(x) && !bf16_on_gpu;
      const auto operand = [bf16_on_gpu](const Tensor& t) {
        return bf16_on_gpu ? t : detail::matmul_operand(t);
      };
      const Tensor x_op = operand(x), w_op = operand(w), g_op = operand(g[0]);
      const Tensor db_with_products = split ? Tensor() : db;
      auto run = [&](const Tensor& xa, const Tensor& wa, const Tensor& ga, const Tensor& dxa,
                     const Tensor& dwa, const Tensor& dba) {
        dispatch("linear backward", x, [&](auto tag) {
          using T = decltype(tag);
          cpu::linear_backward<T>(s, xa.data<T>(), wa.data<T>(), ga.data<T>(),
                                  ptr_or_null<T>(dxa), ptr_or_null<T>(dwa), ptr_or_null<T>(dba));
        }, [&] {
          DDPM_CPU_FAST_ONLY(cpu_fast::linear_backward(
              s, xa.data<float>(), wa.data<float>(), ga.data<float>(), ptr_or_null<float>(dxa),
              ptr_or_null<float>(dwa), ptr_or_null<float>(dba)));
        }, [&] {
          DDPM_CUDA_ONLY(
              if (bf16_on_gpu) {
                const Tensor ws =
                    detail::cuda_workspace(cuda::linear_bf16_backward_workspace(s));
                cuda::linear_bf16_backward(s, xa.data<float>(), wa.data<float>(),
                                           ga.data<float>(), ptr_or_null<float>(dxa),
                                           ptr_or_null<float>(dwa), ptr_or_null<float>(dba),
                                           ws.data<float>(), bf16_copy_of(w), grads.dx_write);
              } else {
                const Tensor ws = detail::cuda_workspace(
                    dba.defined() ? cuda::linear_backward_workspace(s) : 0);
                cuda::linear_backward(s, xa.data<float>(), wa.data<float>(), ga.data<float>(),
                                      ptr_or_null<float>(dxa), ptr_or_null<float>(dwa),
                                      ptr_or_null<float>(dba), ptr_or_null<float>(ws),
                                      tf32_gemm(x), grads.dx_write);
              });
        });
      };
      if (dx.defined() || dw.defined() || db_with_products.defined())
        run(x_op, w_op, g_op, dx, dw, db_with_products);
      if (split && db.defined()) run(x, w, g[0], Tensor(), Tensor(), db);
    });
  }
  return y;
}

}  // namespace

}  // namespace ddpm
