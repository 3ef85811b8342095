// Op entries: upsample_conv3x3, and its pieces fold_upsample_weights and interleave_phases.
// The convolution of a 2x upsampled map as four 2x2 convolutions of the map itself, one per
// output phase (kernels/upsample_conv.h): each piece a recorded op, so the convolutions are
// conv2d's own on every device, precision and storage, and the gradients follow from the
// pieces' rules.
#include <type_traits>

#include "engine/flops.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/resample.h"
#include "kernels/cpu/upsample_conv.h"
#include "kernels/cuda/resample.cuh"
#include "kernels/cuda/upsample_conv.cuh"

namespace ddpm {

using detail::dispatch;

namespace {

// The four pointers of four tensors' data, as the kernels take them: T (const or not) the
// element type, or bf16 bits for Bf16Of.
template <class T>
struct DataOf {
  T* p[4];
  explicit DataOf(const std::vector<Tensor>& ts) {
    for (int i = 0; i < 4; ++i) p[i] = ts[i].data<std::remove_const_t<T>>();
  }
};
template <class B>
struct Bf16Of {
  B* p[4];
  explicit Bf16Of(const std::vector<Tensor>& ts) {
    for (int i = 0; i < 4; ++i) p[i] = detail::bf16_bits(ts[i]);
  }
};

UpsampleShape phase_shape(const Tensor& y) {
  return {y.shape()[0], y.shape()[1], y.shape()[2], y.shape()[3]};
}

// dys[p] = the phase p pixels of dy (fresh tensors of the phases' shape), by the kernels of
// dy's device and dtype.
std::vector<Tensor> deinterleave(const UpsampleShape& s, const Tensor& dy) {
  std::vector<Tensor> dys;
  for (int p = 0; p < 4; ++p)
    dys.push_back(Tensor::empty(Shape{s.n, s.h, s.w, s.c}, dy.dtype(), dy.device()));
  if (detail::cuda_bf16({dy})) {
    OpTimer timer("interleave_phases backward", true);
    DDPM_CUDA_ONLY(
        cuda::interleave_phases_backward(s, detail::bf16_bits(dy), Bf16Of<uint16_t>(dys).p));
    return dys;
  }
  dispatch("interleave_phases backward", dy, [&](auto tag) {
    using T = decltype(tag);
    cpu::interleave_phases_backward<T>(s, dy.data<T>(), DataOf<T>(dys).p);
  }, [&] {
    DDPM_CUDA_ONLY(cuda::interleave_phases_backward(s, dy.data<float>(), DataOf<float>(dys).p));
  });
  return dys;
}

}  // namespace

std::vector<Tensor> fold_upsample_weights(const Tensor& w) {
  if (detail::any_bf16({w})) {
    std::vector<Tensor> folded = fold_upsample_weights(detail::widen(w));
    for (Tensor& f : folded) f = cast(f, DType::BF16);
    return folded;
  }
  detail::check_float("fold_upsample_weights", "w", w);
  detail::check_ndim("fold_upsample_weights", "w", w, 4);
  CHECK(w.shape()[0] == 3 && w.shape()[1] == 3,
        "op 'fold_upsample_weights': w " << w.describe()
                                         << " is not a 3x3 kernel (3, 3, Cin, Cout)");
  const int64_t c_in = w.shape()[2], c_out = w.shape()[3], cin_cout = c_in * c_out;
  std::vector<Tensor> folded;
  for (int p = 0; p < 4; ++p)
    folded.push_back(Tensor::empty(Shape{2, 2, c_in, c_out}, w.dtype(), w.device()));
  dispatch("fold_upsample_weights", w, [&](auto tag) {
    using T = decltype(tag);
    cpu::fold_upsample_weights<T>(cin_cout, w.data<T>(), DataOf<T>(folded).p);
  }, [&] {
    DDPM_CUDA_ONLY(
        cuda::fold_upsample_weights(cin_cout, w.data<float>(), DataOf<float>(folded).p));
  });
  if (should_record({w})) {
    tape().record("fold_upsample_weights", folded,
                  [cin_cout, gw = grad_ref(w)](const std::vector<Tensor>& g) {
      const GradTarget dw_to = grad_target(gw);
      const Tensor dw = detail::buffer_on(dw_to, g[0].device());  // the CPU's kernel adds
      dispatch("fold_upsample_weights backward", dw, [&](auto tag) {
        using T = decltype(tag);
        cpu::unfold_upsample_gradients<T>(cin_cout, DataOf<const T>(g).p, dw.data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(cuda::unfold_upsample_gradients(cin_cout, DataOf<const float>(g).p,
                                                       dw.data<float>(), dw_to.write));
      });
    });
  }
  return folded;
}

Tensor interleave_phases(const std::vector<Tensor>& ys) {
  CHECK(ys.size() == 4, "op 'interleave_phases': takes the 4 phases, got " << ys.size());
  for (const Tensor& y : ys) {
    detail::check_ndim("interleave_phases", "each phase", y, 4);
    CHECK(y.shape() == ys[0].shape() && y.dtype() == ys[0].dtype() && y.device() == ys[0].device(),
          "op 'interleave_phases': the phases differ: " << y.describe() << " and "
                                                        << ys[0].describe());
  }
  if (detail::any_bf16({ys[0]}) && ys[0].device() == Device::CPU)  // the GPU has bf16 kernels
    return cast(interleave_phases({detail::widen(ys[0]), detail::widen(ys[1]),
                                   detail::widen(ys[2]), detail::widen(ys[3])}),
                DType::BF16);
  const UpsampleShape s = phase_shape(ys[0]);
  Tensor y = Tensor::empty(Shape{s.n, 2 * s.h, 2 * s.w, s.c}, ys[0].dtype(), ys[0].device());
  if (detail::cuda_bf16({ys[0]})) {
    OpTimer timer("interleave_phases", true);
    DDPM_CUDA_ONLY(
        cuda::interleave_phases_forward(s, Bf16Of<const uint16_t>(ys).p, detail::bf16_bits(y)));
  } else {
    detail::check_float("interleave_phases", "each phase", ys[0]);
    dispatch("interleave_phases", ys[0], [&](auto tag) {
      using T = decltype(tag);
      cpu::interleave_phases_forward<T>(s, DataOf<const T>(ys).p, y.data<T>());
    }, [&] {
      DDPM_CUDA_ONLY(
          cuda::interleave_phases_forward(s, DataOf<const float>(ys).p, y.data<float>()));
    });
  }
  if (should_record({ys[0], ys[1], ys[2], ys[3]})) {
    std::vector<GradRef> grads;
    for (const Tensor& p : ys) grads.push_back(grad_ref(p));
    tape().record("interleave_phases", {y}, [s, grads](const std::vector<Tensor>& g) {
      const std::vector<Tensor> dys = deinterleave(s, g[0]);
      for (int p = 0; p < 4; ++p)  // fresh and finished with: each becomes the gradient
        if (grads[p]) detail::add_to_grad(grads[p], dys[p], detail::GradSource::HandOver);
    });
  }
  return y;
}

Tensor upsample_conv3x3(const Tensor& x, const Tensor& w, const Tensor& b) {
  CHECK(x.defined() && w.defined(), "op 'upsample_conv3x3': x and w must be defined");
  detail::check_ndim("upsample_conv3x3", "x", x, 4);
  detail::check_ndim("upsample_conv3x3", "w", w, 4);
  CHECK(w.shape()[0] == 3 && w.shape()[1] == 3 && w.shape()[2] == x.shape()[3],
        "op 'upsample_conv3x3': w " << w.describe() << " must be (3, 3, " << x.shape()[3]
                                    << ", Cout) for x " << x.describe());
  // the model's FLOPs: the convolution of the upsampled map, a quarter per phase
  const Shape up{x.shape()[0], 2 * x.shape()[1], 2 * x.shape()[2], x.shape()[3]};
  const uint64_t flops = conv2d_flops(conv2d_shape(up, w.shape(), Conv2dParams::same(3))) / 4;
  const std::vector<Tensor> folded = fold_upsample_weights(w);
  std::vector<Tensor> phases;
  for (int a = 0; a < 2; ++a)
    for (int c = 0; c < 2; ++c)  // phase (a, c): windows from x row i + a - 1, col j + c - 1
      phases.push_back(detail::conv2d_counted(x, folded[2 * a + c], b,
                                              Conv2dParams{1, 1 - a, 1 - c, a, c}, flops));
  return interleave_phases(phases);
}

}  // namespace ddpm
