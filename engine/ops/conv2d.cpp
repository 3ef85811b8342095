// Op entry: conv2d on NHWC tensors, weights (KH, KW, Cin, Cout), per-side padding.
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu_fast/conv2d.h"
#include "kernels/cuda/conv2d.cuh"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

namespace {
ConvAlgorithm g_algorithm = ConvAlgorithm::Tiled;
}  // namespace

void set_conv_algorithm(ConvAlgorithm algo) { g_algorithm = algo; }
ConvAlgorithm conv_algorithm() { return g_algorithm; }

#if DDPM_WITH_CUDA
namespace {
cuda::ConvAlgo cuda_algo() {
  switch (g_algorithm) {
    case ConvAlgorithm::Naive: return cuda::ConvAlgo::Naive;
    case ConvAlgorithm::TensorCore: return cuda::ConvAlgo::TensorCore;
    default: return cuda::ConvAlgo::Tiled;
  }
}
}  // namespace
#endif

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  detail::check_float("conv2d", "x", x);
  detail::check_ndim("conv2d", "x", x, 4);
  detail::check_compatible("conv2d", "w", w, "x", x);
  detail::check_ndim("conv2d", "w", w, 4);
  Conv2dShape s;
  s.n = x.shape()[0];
  s.h = x.shape()[1];
  s.w = x.shape()[2];
  s.c_in = x.shape()[3];
  s.kh = static_cast<int>(w.shape()[0]);
  s.kw = static_cast<int>(w.shape()[1]);
  s.c_out = w.shape()[3];
  s.stride = p.stride;
  s.pad_top = p.pad_top;
  s.pad_left = p.pad_left;
  s.pad_bottom = p.pad_bottom;
  s.pad_right = p.pad_right;
  CHECK(w.shape()[2] == s.c_in, "op 'conv2d': w " << w.describe() << " expects "
                                                  << w.shape()[2] << " input channels, x "
                                                  << x.describe() << " has " << s.c_in);
  CHECK(p.stride >= 1 && p.pad_top >= 0 && p.pad_left >= 0 && p.pad_bottom >= 0 &&
            p.pad_right >= 0,
        "op 'conv2d': stride must be >= 1 and padding >= 0, got stride " << p.stride);
  CHECK(s.h + s.pad_top + s.pad_bottom >= s.kh && s.w + s.pad_left + s.pad_right >= s.kw,
        "op 'conv2d': kernel " << s.kh << "x" << s.kw << " is larger than the padded input "
                               << x.describe());
  if (b.defined()) {
    detail::check_compatible("conv2d", "b", b, "x", x);
    CHECK(b.shape() == Shape{s.c_out},
          "op 'conv2d': b " << b.describe() << " must be (" << s.c_out << ")");
  }
  Tensor y = Tensor::empty(Shape{s.n, s.out_h(), s.out_w(), s.c_out}, x.dtype(), x.device());
  dispatch("conv2d", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::conv2d_forward<T>(s, x.data<T>(), w.data<T>(), ptr_or_null<T>(b), y.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::conv2d_forward(s, x.data<float>(), w.data<float>(),
                                                ptr_or_null<float>(b), y.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), ptr_or_null<float>(b),
                                        y.data<float>(), cuda_algo()));
  });
  if (should_record({x, w, b})) {
    tape().record("conv2d", {y}, [s, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b)](const std::vector<Tensor>& g) {
      Tensor dx = detail::grad_or_null(gx), dw = detail::grad_or_null(gw),
             db = detail::grad_or_null(gb);
      dispatch("conv2d backward", x, [&](auto tag) {
        using T = decltype(tag);
        cpu::conv2d_backward<T>(s, x.data<T>(), w.data<T>(), g[0].data<T>(), ptr_or_null<T>(dx),
                                ptr_or_null<T>(dw), ptr_or_null<T>(db));
      }, [&] {
        DDPM_CPU_FAST_ONLY(cpu_fast::conv2d_backward(
            s, x.data<float>(), w.data<float>(), g[0].data<float>(), ptr_or_null<float>(dx),
            ptr_or_null<float>(dw), ptr_or_null<float>(db)));
      }, [&] {
        DDPM_CUDA_ONLY(
            const Tensor ws = detail::cuda_workspace(
                dw.defined() || db.defined() ? cuda::conv2d_backward_workspace(s, cuda_algo()) : 0);
            cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), g[0].data<float>(),
                                  ptr_or_null<float>(dx), ptr_or_null<float>(dw),
                                  ptr_or_null<float>(db), cuda_algo(), ptr_or_null<float>(ws)));
      });
    });
  }
  return y;
}

}  // namespace ddpm
