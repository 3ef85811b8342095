// Op entries: group norm with affine, the fused group norm + SiLU, and the same with dropout
// after it, over NHWC (or any (N, ..., C)) tensors.
#include <string>

#include "engine/ops.h"
#include "engine/op_profile.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/group_norm.h"
#include "kernels/cpu/group_norm_bf16.h"
#include "kernels/cpu/random.h"
#include "kernels/cpu_fast/group_norm.h"
#include "kernels/cpu_fast/random.h"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/shape_text.h"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

namespace {

// The shape of a group norm of x with `groups`, after the checks every variant makes.
GroupNormShape checked_shape(const char* op, const Tensor& x, const Tensor& gamma,
                             const Tensor& beta, int64_t groups, double eps) {
  CHECK(x.shape().ndim() >= 2, "op '" << op << "': x must be (N, ..., C), got " << x.describe());
  GroupNormShape s;
  s.n = x.shape()[0];
  s.c = x.shape().last();
  s.s = s.n * s.c == 0 ? 0 : x.numel() / (s.n * s.c);
  s.groups = groups;
  s.eps = static_cast<float>(eps);
  CHECK(groups >= 1 && s.c % groups == 0,
        "op '" << op << "': " << s.c << " channels cannot be split into " << groups
               << " equal groups (x " << x.describe() << ")");
  CHECK(eps > 0, "op '" << op << "': eps must be > 0, got " << eps);
  CHECK(gamma.shape() == Shape{s.c} && beta.shape() == Shape{s.c},
        "op '" << op << "': gamma " << gamma.describe() << " and beta " << beta.describe()
               << " must be (" << s.c << ")");
  return s;
}

Tensor group_norm_bf16(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       int64_t groups, double eps, bool silu, const cuda::DropoutSpec& drop);

// The shared entry; `silu` selects the fused variant, drop.p > 0 adds dropout after it (in
// the CUDA kernels' own passes; on the CPU the dropout kernels run after, in place).
// bf16 x runs the bf16 kernels (group_norm_bf16, below).
Tensor group_norm_impl(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       int64_t groups, double eps, bool silu, cuda::DropoutSpec drop = {}) {
  if (x.defined() && x.dtype() == DType::BF16 && !detail::any_bf16({gamma, beta}))
    return group_norm_bf16(op, x, gamma, beta, groups, eps, silu, drop);
  if (detail::any_bf16({x, gamma, beta}))
    return cast(group_norm_impl(op, detail::widen(x), detail::widen(gamma), detail::widen(beta),
                                groups, eps, silu, drop),
                DType::BF16);
  detail::check_float(op, "x", x);
  detail::check_compatible(op, "gamma", gamma, "x", x);
  detail::check_compatible(op, "beta", beta, "x", x);
  const GroupNormShape s = checked_shape(op, x, gamma, beta, groups, eps);
  const OpShape op_shape([&] { return group_norm_shape_text(s); });
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty(Shape{s.n, groups}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty(Shape{s.n, groups}, x.dtype(), x.device());
  const int64_t n = x.numel();
  const bool dropout = drop.p > 0;
  dispatch(op, x, [&](auto tag) {
    using T = decltype(tag);
    (silu ? cpu::group_norm_silu_forward<T> : cpu::group_norm_forward<T>)(
        s, x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(), mean.data<T>(),
        rstd.data<T>());
    if (dropout)
      cpu::dropout_forward<T>(n, drop.p, drop.seed, drop.stream.base, y.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(
        (silu ? cpu_fast::group_norm_silu_forward : cpu_fast::group_norm_forward)(
            s, x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(),
            mean.data<float>(), rstd.data<float>());
        if (dropout) cpu_fast::dropout_forward(n, drop.p, drop.seed, drop.stream.base,
                                               y.data<float>(), y.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(if (silu) cuda::group_norm_silu_forward(
                       s, x.data<float>(), gamma.data<float>(), beta.data<float>(),
                       y.data<float>(), mean.data<float>(), rstd.data<float>(), drop);
                   else cuda::group_norm_forward(s, x.data<float>(), gamma.data<float>(),
                                                 beta.data<float>(), y.data<float>(),
                                                 mean.data<float>(), rstd.data<float>()));
  });
  if (should_record({x, gamma, beta})) {
    tape().record(op, {y}, [op, silu, s, drop, x, gamma, beta, mean, rstd, gx = grad_ref(x),
                            gg = grad_ref(gamma), gb = grad_ref(beta)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return group_norm_shape_text(s); });
      // dx: the GPU's kernel and the fast CPU one write it outright when it is x's first
      // gradient; the CPU reference adds
      const GradTarget dx_to = grad_target(gx);
      const Tensor dx = detail::buffer_for(dx_to, !detail::runs_cpu_reference(x));
      const Tensor dgamma = detail::grad_or_null(gg), dbeta = detail::grad_or_null(gb);
      // The fused op first turns dy into dh = dy * silu'(h) (dy through dropout's backward
      // first, with dropout), then runs group norm's rule: the reference and the GPU through
      // a dh of the whole batch, the fast CPU kernel one sample at a time, in cache.
      const auto batch_dh = [&] {
        return silu ? Tensor::empty(x.shape(), x.dtype(), x.device()) : g[0];
      };
      const bool dropped = drop.p > 0;
      const int64_t count = x.numel();
      // CPU: the dropout's backward into a zeroed buffer, then silu's (the unfused chain).
      const Tensor dy = dropped && x.device() == Device::CPU
                            ? Tensor::zeros(x.shape(), x.dtype(), x.device())
                            : g[0];
      const std::string backward_op = std::string(op) + " backward";
      dispatch(backward_op.c_str(), x, [&](auto tag) {
        using T = decltype(tag);
        const Tensor dh = batch_dh();
        if (dropped)
          cpu::dropout_backward<T>(count, drop.p, drop.seed, drop.stream.base, g[0].data<T>(),
                                   dy.data<T>());
        if (silu)
          cpu::group_norm_silu_dh<T>(s, x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                     mean.data<T>(), rstd.data<T>(), dy.data<T>(), dh.data<T>());
        cpu::group_norm_backward<T>(s, x.data<T>(), gamma.data<T>(), mean.data<T>(),
                                    rstd.data<T>(), dh.data<T>(), ptr_or_null<T>(dx),
                                    ptr_or_null<T>(dgamma), ptr_or_null<T>(dbeta));
      }, [&] {
        DDPM_CPU_FAST_ONLY(
            if (dropped) cpu_fast::dropout_backward(count, drop.p, drop.seed, drop.stream.base,
                                                    g[0].data<float>(), dy.data<float>());
            if (silu) cpu_fast::group_norm_silu_backward(
                s, x.data<float>(), gamma.data<float>(), beta.data<float>(), mean.data<float>(),
                rstd.data<float>(), dy.data<float>(), ptr_or_null<float>(dx),
                ptr_or_null<float>(dgamma), ptr_or_null<float>(dbeta), dx_to.write);
            else cpu_fast::group_norm_backward(
                s, x.data<float>(), gamma.data<float>(), mean.data<float>(), rstd.data<float>(),
                dy.data<float>(), ptr_or_null<float>(dx), ptr_or_null<float>(dgamma),
                ptr_or_null<float>(dbeta), dx_to.write));
      }, [&] {
        DDPM_CUDA_ONLY(
            const Tensor ws = detail::cuda_workspace(
                dgamma.defined() || dbeta.defined() ? cuda::group_norm_backward_workspace(s) : 0);
            // one kernel recomputes dh as it goes (the same bits; with dropout, on v4)
            if (silu && dx.defined() &&
                cuda::group_norm_silu_backward_fuses(s, drop.p, false,
                                                     {x.raw(), g[0].raw(), dx.raw()})) {
              cuda::group_norm_silu_backward(
                  s, x.data<float>(), gamma.data<float>(), beta.data<float>(), mean.data<float>(),
                  rstd.data<float>(), g[0].data<float>(), dx.data<float>(),
                  ptr_or_null<float>(dgamma), ptr_or_null<float>(dbeta), ptr_or_null<float>(ws),
                  dx_to.write, drop);
              return;
            }
            const Tensor dh = batch_dh();
            if (silu) cuda::group_norm_silu_dh(s, x.data<float>(), gamma.data<float>(),
                                               beta.data<float>(), mean.data<float>(),
                                               rstd.data<float>(), g[0].data<float>(),
                                               dh.data<float>(), drop);
            cuda::group_norm_backward(s, x.data<float>(), gamma.data<float>(), mean.data<float>(),
                                      rstd.data<float>(), dh.data<float>(), ptr_or_null<float>(dx),
                                      ptr_or_null<float>(dgamma), ptr_or_null<float>(dbeta),
                                      ptr_or_null<float>(ws), dx_to.write));
      });
    });
  }
  return y;
}

// bf16 activations (x, y and their gradients) with fp32 gamma, beta, statistics and sums:
// the *_bf16 kernels (half the bytes of the f32 ones). The backward rounds dh = dy * silu'
// to bf16 between its two passes (stored, or without dropout recomputed in one kernel: the
// same bits), one rounding more than the f32 chain the fallback runs.
Tensor group_norm_bf16(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       int64_t groups, double eps, bool silu, const cuda::DropoutSpec& drop) {
  for (const Tensor* t : {&gamma, &beta})
    CHECK(t->defined() && t->dtype() == DType::F32 && t->device() == x.device(),
          "op '" << op << "': gamma and beta must be f32 on x's device for bf16 x "
                 << x.describe() << ", got " << (t->defined() ? t->describe() : "undefined"));
  const GroupNormShape s = checked_shape(op, x, gamma, beta, groups, eps);
  const OpShape op_shape([&] { return group_norm_shape_text(s); });
  using detail::bf16_bits;
  Tensor y = Tensor::empty(x.shape(), DType::BF16, x.device());
  Tensor mean = Tensor::empty(Shape{s.n, groups}, DType::F32, x.device());
  Tensor rstd = Tensor::empty(Shape{s.n, groups}, DType::F32, x.device());
  const cpu::DropoutKeys keys{drop.p, drop.seed, drop.stream.base};
  {
    OpTimer timer(op, x.device() == Device::CUDA);
    if (x.device() == Device::CUDA) {
      DDPM_CUDA_ONLY(cuda::group_norm_forward_bf16(s, bf16_bits(x), gamma.data<float>(),
                                                   beta.data<float>(), bf16_bits(y),
                                                   mean.data<float>(), rstd.data<float>(), silu,
                                                   drop));
    } else {
      cpu::group_norm_forward_bf16(s, bf16_bits(x), gamma.data<float>(), beta.data<float>(),
                                   bf16_bits(y), mean.data<float>(), rstd.data<float>(), silu,
                                   keys);
    }
  }
  if (should_record({x, gamma, beta})) {
    tape().record(op, {y}, [op, silu, s, drop, keys, x, gamma, beta, mean, rstd,
                            gx = grad_ref(x), gg = grad_ref(gamma),
                            gb = grad_ref(beta)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return group_norm_shape_text(s); });
      // dx: the GPU's kernel writes it outright when it is x's first gradient; the CPU's add
      const GradTarget dx_to = grad_target(gx);
      const Tensor dx = detail::buffer_on(dx_to, x.device());
      const Tensor dgamma = detail::grad_or_null(gg), dbeta = detail::grad_or_null(gb);
      uint16_t* const dx_bits = dx.defined() ? bf16_bits(dx) : nullptr;
      const std::string backward_op = std::string(op) + " backward";
      OpTimer timer(backward_op.c_str(), x.device() == Device::CUDA);
      if (x.device() == Device::CUDA) {
        DDPM_CUDA_ONLY(
            const Tensor ws = detail::cuda_workspace(
                dgamma.defined() || dbeta.defined() ? cuda::group_norm_backward_workspace(s) : 0);
            // one kernel recomputes dh as it goes (the same bits; with dropout, on v4)
            if (silu && dx_bits &&
                cuda::group_norm_silu_backward_fuses(s, drop.p, true,
                                                     {x.raw(), g[0].raw(), dx_bits})) {
              cuda::group_norm_silu_backward_bf16(
                  s, bf16_bits(x), gamma.data<float>(), beta.data<float>(), mean.data<float>(),
                  rstd.data<float>(), bf16_bits(g[0]), dx_bits, ptr_or_null<float>(dgamma),
                  ptr_or_null<float>(dbeta), ptr_or_null<float>(ws), dx_to.write, drop);
              return;
            }
            const Tensor dh = silu ? Tensor::empty(x.shape(), DType::BF16, x.device()) : g[0];
            if (silu) cuda::group_norm_silu_dh_bf16(s, bf16_bits(x), gamma.data<float>(),
                                                    beta.data<float>(), mean.data<float>(),
                                                    rstd.data<float>(), bf16_bits(g[0]),
                                                    bf16_bits(dh), drop);
            cuda::group_norm_backward_bf16(s, bf16_bits(x), gamma.data<float>(),
                                           mean.data<float>(), rstd.data<float>(), bf16_bits(dh),
                                           dx_bits, ptr_or_null<float>(dgamma),
                                           ptr_or_null<float>(dbeta), ptr_or_null<float>(ws),
                                           dx_to.write));
        return;
      }
      const Tensor dh = silu ? Tensor::empty(x.shape(), DType::BF16, x.device()) : g[0];
      if (silu)
        cpu::group_norm_silu_dh_bf16(s, bf16_bits(x), gamma.data<float>(), beta.data<float>(),
                                     mean.data<float>(), rstd.data<float>(), bf16_bits(g[0]),
                                     bf16_bits(dh), keys);
      cpu::group_norm_backward_bf16(s, bf16_bits(x), gamma.data<float>(), mean.data<float>(),
                                    rstd.data<float>(), bf16_bits(dh), dx_bits,
                                    ptr_or_null<float>(dgamma), ptr_or_null<float>(dbeta));
    });
  }
  return y;
}

}  // namespace

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                  double eps) {
  return group_norm_impl("group_norm", x, gamma, beta, groups, eps, false);
}

Tensor group_norm_silu(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                       double eps) {
  return group_norm_impl("group_norm_silu", x, gamma, beta, groups, eps, true);
}

Tensor group_norm_silu_dropout(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                               int64_t groups, double p, uint64_t seed, StepKey stream,
                               double eps) {
  CHECK(p >= 0.0 && p < 1.0, "op 'group_norm_silu_dropout': p must be in [0, 1), got " << p);
  CHECK(x.device() != Device::CPU || !stream.live(),
        "op 'group_norm_silu_dropout': a stream read from device memory on a CPU tensor");
  return group_norm_impl("group_norm_silu_dropout", x, gamma, beta, groups, eps, true,
                         cuda::DropoutSpec{static_cast<float>(p), seed, stream});
}

}  // namespace ddpm
