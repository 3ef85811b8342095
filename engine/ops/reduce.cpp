// Op entries: sum, mean, mse (all to a scalar).
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cuda/reduce.cuh"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

namespace {

Tensor scaled_sum(const char* op, const Tensor& x, double scale) {
  // bf16 inputs are summed in fp32 and the result stays f32 (a loss, a statistic)
  if (detail::any_bf16({x})) return scaled_sum(op, detail::widen(x), scale);
  detail::check_float(op, "x", x);
  CHECK(x.numel() > 0, "op '" << op << "': x " << x.describe() << " is empty");
  Tensor y = Tensor::empty(Shape{}, x.dtype(), x.device());
  dispatch(op, x, [&](auto tag) {
    using T = decltype(tag);
    cpu::sum_forward<T>(x.numel(), static_cast<T>(scale), x.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(
        const Tensor workspace = Tensor::empty(Shape{cuda::kSumWorkspace}, DType::F32, Device::CUDA);
        cuda::sum_forward(x.numel(), static_cast<float>(scale), x.data<float>(), y.data<float>(),
                          workspace.data<float>()));
  });
  if (should_record({x})) {
    tape().record(op, {y}, [op, scale, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      Tensor dx = grad_buffer(gx);
      dispatch(op, dx, [&](auto tag) {
        using T = decltype(tag);
        cpu::sum_backward<T>(dx.numel(), static_cast<T>(scale), g[0].data<T>(), dx.data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(cuda::sum_backward(dx.numel(), static_cast<float>(scale), g[0].data<float>(),
                                          dx.data<float>()));
      });
    });
  }
  return y;
}

}  // namespace

Tensor sum(const Tensor& x) { return scaled_sum("sum", x, 1.0); }

Tensor mean(const Tensor& x) {
  return scaled_sum("mean", x, x.defined() ? 1.0 / static_cast<double>(x.numel()) : 1.0);
}

Tensor mse(const Tensor& pred, const Tensor& target) {
  if (detail::any_bf16({pred, target})) return mse(detail::widen(pred), detail::widen(target));
  detail::check_same("mse", "pred", pred, "target", target);
  CHECK(pred.numel() > 0, "op 'mse': pred " << pred.describe() << " is empty");
  Tensor y = Tensor::empty(Shape{}, pred.dtype(), pred.device());
  dispatch("mse", pred, [&](auto tag) {
    using T = decltype(tag);
    cpu::mse_forward<T>(pred.numel(), pred.data<T>(), target.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(
        const Tensor workspace = Tensor::empty(Shape{cuda::kSumWorkspace}, DType::F32, Device::CUDA);
        cuda::mse_forward(pred.numel(), pred.data<float>(), target.data<float>(), y.data<float>(),
                          workspace.data<float>()));
  });
  if (should_record({pred, target})) {
    tape().record("mse", {y}, [pred, target, gp = grad_ref(pred), gt = grad_ref(target)](
                                  const std::vector<Tensor>& g) {
      Tensor dp = detail::grad_or_null(gp), dt = detail::grad_or_null(gt);
      dispatch("mse backward", pred, [&](auto tag) {
        using T = decltype(tag);
        cpu::mse_backward<T>(pred.numel(), pred.data<T>(), target.data<T>(), g[0].data<T>(),
                             ptr_or_null<T>(dp), ptr_or_null<T>(dt));
      }, [&] {
        DDPM_CUDA_ONLY(cuda::mse_backward(pred.numel(), pred.data<float>(), target.data<float>(),
                                          g[0].data<float>(), ptr_or_null<float>(dp),
                                          ptr_or_null<float>(dt)));
      });
    });
  }
  return y;
}

Tensor mse_per_sample(const Tensor& pred, const Tensor& target) {
  if (detail::any_bf16({pred, target}))
    return mse_per_sample(detail::widen(pred), detail::widen(target));
  detail::check_same("mse_per_sample", "pred", pred, "target", target);
  CHECK(pred.shape().ndim() >= 1 && pred.numel() > 0,
        "op 'mse_per_sample': pred must be a non-empty (N, ...), got " << pred.describe());
  const int64_t n = pred.shape()[0], inner = pred.numel() / n;
  Tensor y = Tensor::empty(Shape{n}, pred.dtype(), pred.device());
  dispatch("mse_per_sample", pred, [&](auto tag) {
    using T = decltype(tag);
    cpu::mse_per_sample_forward<T>(n, inner, pred.data<T>(), target.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::mse_per_sample_forward(n, inner, pred.data<float>(), target.data<float>(),
                                                y.data<float>()));
  });
  if (should_record({pred, target})) {
    tape().record("mse_per_sample", {y}, [n, inner, pred, target, gp = grad_ref(pred),
                                          gt = grad_ref(target)](const std::vector<Tensor>& g) {
      Tensor dp = detail::grad_or_null(gp), dt = detail::grad_or_null(gt);
      dispatch("mse_per_sample backward", pred, [&](auto tag) {
        using T = decltype(tag);
        cpu::mse_per_sample_backward<T>(n, inner, pred.data<T>(), target.data<T>(),
                                        g[0].data<T>(), ptr_or_null<T>(dp), ptr_or_null<T>(dt));
      }, [&] {
        DDPM_CUDA_ONLY(cuda::mse_per_sample_backward(n, inner, pred.data<float>(),
                                                     target.data<float>(), g[0].data<float>(),
                                                     ptr_or_null<float>(dp), ptr_or_null<float>(dt)));
      });
    });
  }
  return y;
}

}  // namespace ddpm
