// Op entry: linear, y (..., N) = x (..., K) w (K, N) + b (N).
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu_fast/linear.h"
#include "kernels/cuda/linear.cuh"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_float("linear", "x", x);
  detail::check_compatible("linear", "w", w, "x", x);
  detail::check_ndim("linear", "w", w, 2);
  CHECK(x.shape().ndim() >= 1 && x.shape().last() == w.shape()[0],
        "op 'linear': x " << x.describe() << " has last dimension " << x.shape().last()
                          << " but w " << w.describe() << " expects " << w.shape()[0]);
  LinearShape s{x.shape().rows(), w.shape()[0], w.shape()[1]};
  if (b.defined()) {
    detail::check_compatible("linear", "b", b, "x", x);
    CHECK(b.shape() == Shape{s.n},
          "op 'linear': b " << b.describe() << " must be (" << s.n << ")");
  }
  Tensor y = Tensor::empty(x.shape().with_last(s.n), x.dtype(), x.device());
  dispatch("linear", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::linear_forward<T>(s, x.data<T>(), w.data<T>(), ptr_or_null<T>(b), y.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::linear_forward(s, x.data<float>(), w.data<float>(),
                                                ptr_or_null<float>(b), y.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(cuda::linear_forward(s, x.data<float>(), w.data<float>(), ptr_or_null<float>(b),
                                        y.data<float>()));
  });
  if (should_record({x, w, b})) {
    tape().record("linear", {y}, [s, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b)](const std::vector<Tensor>& g) {
      Tensor dx = detail::grad_or_null(gx), dw = detail::grad_or_null(gw),
             db = detail::grad_or_null(gb);
      dispatch("linear backward", x, [&](auto tag) {
        using T = decltype(tag);
        cpu::linear_backward<T>(s, x.data<T>(), w.data<T>(), g[0].data<T>(), ptr_or_null<T>(dx),
                                ptr_or_null<T>(dw), ptr_or_null<T>(db));
      }, [&] {
        DDPM_CPU_FAST_ONLY(cpu_fast::linear_backward(
            s, x.data<float>(), w.data<float>(), g[0].data<float>(), ptr_or_null<float>(dx),
            ptr_or_null<float>(dw), ptr_or_null<float>(db)));
      }, [&] {
        DDPM_CUDA_ONLY(
            const Tensor ws =
                detail::cuda_workspace(db.defined() ? cuda::linear_backward_workspace(s) : 0);
            cuda::linear_backward(s, x.data<float>(), w.data<float>(), g[0].data<float>(),
                                  ptr_or_null<float>(dx), ptr_or_null<float>(dw),
                                  ptr_or_null<float>(db), ptr_or_null<float>(ws)));
      });
    });
  }
  return y;
}

}  // namespace ddpm
