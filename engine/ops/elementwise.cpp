// Op entries: add, mul, scale, broadcast_add, silu, accumulate.
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/elementwise.cuh"

namespace ddpm {

using detail::dispatch;

namespace detail {

void add_to_grad(const GradRef& slot, const Tensor& g, GradSource source) {
  CHECK(slot != nullptr, "add_to_grad of a tensor that does not require grad");
  CHECK(g.numel() == slot->shape.numel() && g.device() == slot->device,
        "add_to_grad: " << g.describe() << " for a gradient of shape " << slot->shape.str());
  if (slot->grad) {  // a sum
    accumulate(grad_buffer(slot), g.view(slot->shape));
    return;
  }
  // The first: g itself, a copy, or g converted to the gradient's dtype (one pass; rounded as
  // adding g to zeros would round it: once, to nearest even)
  const Tensor first = g.view(slot->shape);
  const Tensor grad = first.dtype() != slot->dtype      ? cast(first, slot->dtype)
                      : source == GradSource::HandOver ? first
                                                       : first.clone();
  slot->grad = grad.impl_ptr();
}

}  // namespace detail

void accumulate(const Tensor& dst, const Tensor& src, double alpha) {
  dst.impl().storage->note_write();  // a derived copy of dst's buffer is stale after this
  if (detail::any_bf16({dst, src})) {  // a bf16 gradient, or an f32 one receiving bf16
    CHECK(dst.shape() == src.shape() && dst.device() == src.device() &&
              dst.dtype() != DType::F64 && src.dtype() != DType::F64,
          "op 'accumulate': dst " << dst.describe() << " and src " << src.describe()
                                  << " must have the same shape and device, each f32 or bf16");
    detail::accumulate_stored(dst, src, alpha);
    return;
  }
  detail::check_same("accumulate", "dst", dst, "src", src);
  dispatch("accumulate", dst, [&](auto tag) {
    using T = decltype(tag);
    cpu::axpy<T>(dst.numel(), static_cast<T>(alpha), src.data<T>(), dst.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::axpy(dst.numel(), static_cast<float>(alpha), src.data<float>(),
                              dst.data<float>()));
  });
}

Tensor add(const Tensor& a, const Tensor& b) {
  const bool gpu_bf16 = detail::cuda_bf16({a, b});  // both bf16 on the GPU: its bf16 kernel
  if (detail::any_bf16({a, b}) && !gpu_bf16)
    return cast(add(detail::widen(a), detail::widen(b)), DType::BF16);
  if (gpu_bf16) {
    CHECK(a.shape() == b.shape(), "op 'add': a " << a.describe() << " and b " << b.describe()
                                                 << " must have the same shape");
  } else {
    detail::check_same("add", "a", a, "b", b);
  }
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (gpu_bf16) {
    OpTimer timer("add", true);
    DDPM_CUDA_ONLY(cuda::add_forward(a.numel(), detail::bf16_bits(a), detail::bf16_bits(b),
                                     detail::bf16_bits(y)));
  } else {
    dispatch("add", a, [&](auto tag) {
      using T = decltype(tag);
      cpu::add_forward<T>(a.numel(), a.data<T>(), b.data<T>(), y.data<T>());
    }, [&] {
      DDPM_CUDA_ONLY(cuda::add_forward(a.numel(), a.data<float>(), b.data<float>(),
                                       y.data<float>()));
    });
  }
  if (should_record({a, b})) {
    tape().record("add", {y}, [ga = grad_ref(a), gb = grad_ref(b)](const std::vector<Tensor>& g) {
      // the first contribution to a's or b's gradient is g itself (b's) or its copy (a's)
      if (ga) detail::add_to_grad(ga, g[0], gb ? detail::GradSource::Borrowed
                                               : detail::GradSource::HandOver);
      if (gb) detail::add_to_grad(gb, g[0], detail::GradSource::HandOver);
    });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (detail::any_bf16({a, b})) return cast(mul(detail::widen(a), detail::widen(b)), DType::BF16);
  detail::check_same("mul", "a", a, "b", b);
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  dispatch("mul", a, [&](auto tag) {
    using T = decltype(tag);
    cpu::mul_forward<T>(a.numel(), a.data<T>(), b.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::mul_forward(a.numel(), a.data<float>(), b.data<float>(), y.data<float>()));
  });
  if (should_record({a, b})) {
    tape().record("mul", {y}, [a, b, ga = grad_ref(a), gb = grad_ref(b)](
                                  const std::vector<Tensor>& g) {
      dispatch("mul backward", a, [&](auto tag) {
        using T = decltype(tag);
        if (ga) cpu::mul_accumulate<T>(a.numel(), g[0].data<T>(), b.data<T>(),
                                       grad_buffer(ga).data<T>());
        if (gb) cpu::mul_accumulate<T>(a.numel(), g[0].data<T>(), a.data<T>(),
                                       grad_buffer(gb).data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(if (ga) cuda::mul_accumulate(a.numel(), g[0].data<float>(), b.data<float>(),
                                                    grad_buffer(ga).data<float>());
                       if (gb) cuda::mul_accumulate(a.numel(), g[0].data<float>(), a.data<float>(),
                                                    grad_buffer(gb).data<float>()));
      });
    });
  }
  return y;
}

void scale_in_place(const Tensor& x, double s) {
  detail::check_float("scale_in_place", "x", x);
  x.impl().storage->note_write();
  dispatch("scale_in_place", x, [&](auto tag) {  // y[i] = s x[i] reads before it writes
    using T = decltype(tag);
    cpu::scale_forward<T>(x.numel(), static_cast<T>(s), x.data<T>(), x.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::scale_forward(x.numel(), static_cast<float>(s), x.data<float>(),
                                       x.data<float>()));
  });
}

Tensor scale(const Tensor& x, double s) {
  if (detail::any_bf16({x})) return cast(scale(detail::widen(x), s), DType::BF16);
  detail::check_float("scale", "x", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch("scale", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::scale_forward<T>(x.numel(), static_cast<T>(s), x.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::scale_forward(x.numel(), static_cast<float>(s), x.data<float>(),
                                       y.data<float>()));
  });
  if (should_record({x})) {
    tape().record("scale", {y}, [s, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      accumulate(grad_buffer(gx), g[0], s);
    });
  }
  return y;
}

Tensor broadcast_add(const Tensor& x, const Tensor& v) {
  if (detail::any_bf16({x, v}))
    return cast(broadcast_add(detail::widen(x), detail::widen(v)), DType::BF16);
  detail::check_float("broadcast_add", "x", x);
  detail::check_compatible("broadcast_add", "v", v, "x", x);
  const Shape& xs = x.shape();
  CHECK(xs.ndim() >= 2, "op 'broadcast_add': x must have at least 2 dimensions, got "
                            << x.describe());
  BroadcastShape s;
  s.n = xs[0];
  s.c = xs.last();
  s.s = xs.numel() / (s.n * s.c == 0 ? 1 : s.n * s.c);
  if (v.shape() == Shape{s.c}) {
    s.per_sample = false;
  } else if (v.shape() == Shape{s.n, s.c}) {
    s.per_sample = true;
  } else {
    THROW_ERROR("op 'broadcast_add': v " << v.describe() << " must be (C) = (" << s.c
                                  << ") or (N, C) = (" << s.n << ", " << s.c << ") for x "
                                  << x.describe());
  }
  Tensor y = Tensor::empty(xs, x.dtype(), x.device());
  dispatch("broadcast_add", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::broadcast_add_forward<T>(s, x.data<T>(), v.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::broadcast_add_forward(s, x.data<float>(), v.data<float>(), y.data<float>()));
  });
  if (should_record({x, v})) {
    tape().record("broadcast_add", {y}, [s, gx = grad_ref(x), gv = grad_ref(v)](
                                            const std::vector<Tensor>& g) {
      if (gv) detail::broadcast_add_grad(s, g[0], grad_target(gv));
      // last, so that g[0], read above, may become x's gradient
      if (gx) detail::add_to_grad(gx, g[0], detail::GradSource::HandOver);
    });
  }
  return y;
}

namespace detail {

void broadcast_add_grad(const BroadcastShape& s, const Tensor& g, const GradTarget& dv_to) {
  if (g.dtype() == DType::BF16) {  // a bf16 activation's gradient: summed in fp32
    if (g.device() == Device::CPU) return broadcast_add_grad(s, cast(g, DType::F32), dv_to);
    OpTimer timer("broadcast_add backward", true);
    DDPM_CUDA_ONLY(const Tensor ws = cuda_workspace(cuda::broadcast_add_backward_workspace(s));
                   cuda::broadcast_add_backward(s, bf16_bits(g), dv_to.buffer.data<float>(),
                                                ptr_or_null<float>(ws), dv_to.write));
    return;
  }
  const Tensor dv = buffer_on(dv_to, g.device());
  dispatch("broadcast_add backward", dv, [&](auto tag) {
    using T = decltype(tag);
    cpu::broadcast_add_backward<T>(s, g.data<T>(), dv.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(
        const Tensor ws = cuda_workspace(cuda::broadcast_add_backward_workspace(s));
        cuda::broadcast_add_backward(s, g.data<float>(), dv.data<float>(), ptr_or_null<float>(ws),
                                     dv_to.write));
  });
}

}  // namespace detail

Tensor per_sample_axpby(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& y) {
  if (detail::any_bf16({a, x, b, y}))
    return cast(per_sample_axpby(detail::widen(a), detail::widen(x), detail::widen(b),
                                 detail::widen(y)),
                DType::BF16);
  detail::check_same("per_sample_axpby", "x", x, "y", y);
  CHECK(x.shape().ndim() >= 1, "op 'per_sample_axpby': x must be (N, ...), got " << x.describe());
  const int64_t n = x.shape()[0], inner = n == 0 ? 0 : x.numel() / n;
  for (const Tensor* c : {&a, &b}) {
    detail::check_compatible("per_sample_axpby", "coefficient", *c, "x", x);
    CHECK(c->shape() == Shape{n}, "op 'per_sample_axpby': coefficient " << c->describe()
                                                                        << " must be (" << n << ")");
    CHECK(!c->requires_grad(), "op 'per_sample_axpby': coefficients are constants; "
                                   << c->describe() << " requires grad");
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch("per_sample_axpby", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::per_sample_axpby_forward<T>(n, inner, a.data<T>(), x.data<T>(), b.data<T>(),
                                     y.data<T>(), out.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::per_sample_axpby_forward(n, inner, a.data<float>(), x.data<float>(),
                                                  b.data<float>(), y.data<float>(),
                                                  out.data<float>()));
  });
  if (should_record({x, y})) {
    tape().record("per_sample_axpby", {out}, [n, inner, a, b, gx = grad_ref(x),
                                              gy = grad_ref(y)](const std::vector<Tensor>& g) {
      dispatch("per_sample_axpby backward", a, [&](auto tag) {
        using T = decltype(tag);
        if (gx) cpu::per_sample_scale_accumulate<T>(n, inner, a.data<T>(), g[0].data<T>(),
                                                    grad_buffer(gx).data<T>());
        if (gy) cpu::per_sample_scale_accumulate<T>(n, inner, b.data<T>(), g[0].data<T>(),
                                                    grad_buffer(gy).data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(
            if (gx) cuda::per_sample_scale_accumulate(n, inner, a.data<float>(), g[0].data<float>(),
                                                      grad_buffer(gx).data<float>());
            if (gy) cuda::per_sample_scale_accumulate(n, inner, b.data<float>(), g[0].data<float>(),
                                                      grad_buffer(gy).data<float>()));
      });
    });
  }
  return out;
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  if (detail::any_bf16({x})) return cast(clamp(detail::widen(x), lo, hi), DType::BF16);
  detail::check_float("clamp", "x", x);
  CHECK(lo <= hi, "op 'clamp': lo " << lo << " > hi " << hi);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch("clamp", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::clamp_forward<T>(x.numel(), static_cast<T>(lo), static_cast<T>(hi), x.data<T>(),
                          y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::clamp_forward(x.numel(), static_cast<float>(lo), static_cast<float>(hi),
                                       x.data<float>(), y.data<float>()));
  });
  if (should_record({x})) {
    tape().record("clamp", {y}, [x, lo, hi, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      Tensor dx = grad_buffer(gx);
      dispatch("clamp backward", x, [&](auto tag) {
        using T = decltype(tag);
        cpu::clamp_backward<T>(x.numel(), static_cast<T>(lo), static_cast<T>(hi), x.data<T>(),
                               g[0].data<T>(), dx.data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(cuda::clamp_backward(x.numel(), static_cast<float>(lo),
                                            static_cast<float>(hi), x.data<float>(),
                                            g[0].data<float>(), dx.data<float>()));
      });
    });
  }
  return y;
}

Tensor silu(const Tensor& x) {
  if (detail::any_bf16({x})) return cast(silu(detail::widen(x)), DType::BF16);
  detail::check_float("silu", "x", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch("silu", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::silu_forward<T>(x.numel(), x.data<T>(), y.data<T>());
  }, [&] { DDPM_CUDA_ONLY(cuda::silu_forward(x.numel(), x.data<float>(), y.data<float>())); });
  if (should_record({x})) {
    tape().record("silu", {y}, [x, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      // the GPU's kernel writes dx outright if it is the first gradient; the CPU's adds
      const GradTarget dx_to = grad_target(gx);
      const Tensor dx = detail::buffer_on(dx_to, x.device());
      dispatch("silu backward", x, [&](auto tag) {
        using T = decltype(tag);
        cpu::silu_backward<T>(x.numel(), x.data<T>(), g[0].data<T>(), dx.data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(cuda::silu_backward(x.numel(), x.data<float>(), g[0].data<float>(),
                                           dx.data<float>(), dx_to.write));
      });
    });
  }
  return y;
}

}  // namespace ddpm
