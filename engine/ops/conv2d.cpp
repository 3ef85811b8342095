// Op entry: conv2d on NHWC tensors, weights (KH, KW, Cin, Cout), per-side padding.
#include <optional>
#include <string>

#include "engine/device.h"
#include "engine/flops.h"
#include "engine/ops.h"
#include "engine/op_profile.h"
#include "engine/ops/op_util.h"
#include "engine/weight_copy.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu_fast/conv2d.h"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "kernels/shape_text.h"

namespace ddpm {

using detail::dispatch;
using detail::ptr_or_null;

namespace {
ConvAlgorithm g_algorithm = ConvAlgorithm::Tiled;
bool g_autotune = false;

// The bf16 kernels' block shapes follow from both settings: v5's or v4's, tuned or not.
void set_bf16_tiles() {
#if DDPM_WITH_CUDA
  const bool v5 = g_algorithm == ConvAlgorithm::Wgmma;
  cuda::set_conv2d_bf16_tiles(v5 ? (g_autotune ? cuda::Bf16Tiles::WgmmaAutotune
                                               : cuda::Bf16Tiles::Wgmma)
                                 : (g_autotune ? cuda::Bf16Tiles::Autotune
                                               : cuda::Bf16Tiles::Heuristic));
#endif
}
}  // namespace

void set_conv_algorithm(ConvAlgorithm algo) {
  g_algorithm = algo;
  set_bf16_tiles();
}

void set_conv_autotune(bool on) {
  g_autotune = on;
  set_bf16_tiles();
#if DDPM_WITH_CUDA
  cuda::set_conv2d_cudnn_benchmark(on);  // cuDNN's algorithms timed too
#endif
}
ConvAlgorithm conv_algorithm() { return g_algorithm; }

std::string conv_algorithm_unavailable(ConvAlgorithm algo) {
  if (algo != ConvAlgorithm::Wgmma) return "";
#if DDPM_WITH_CUDA
  if (!cuda_available()) return "convolution v5 (wgmma) needs a GPU: " + cuda_unavailable_reason();
  return cuda::gemm_sm90_available() ? "" : "convolution v5 (wgmma) " + cuda::sm90a_missing();
#else
  return "convolution v5 (wgmma) needs CUDA; this build has none";
#endif
}

#if DDPM_WITH_CUDA
namespace {
cuda::ConvAlgo cuda_algo() {
  if (g_algorithm == ConvAlgorithm::Cudnn)  // the library, in the precision's math
    return precision() == Precision::BF16   ? cuda::ConvAlgo::CudnnBf16
           : precision() == Precision::TF32 ? cuda::ConvAlgo::CudnnTf32
                                            : cuda::ConvAlgo::Cudnn;
  if (g_algorithm == ConvAlgorithm::Auto)  // ours or the library's, whichever is faster
    return precision() == Precision::BF16   ? cuda::ConvAlgo::AutoBf16
           : precision() == Precision::TF32 ? cuda::ConvAlgo::AutoTf32
                                            : cuda::ConvAlgo::AutoFp32;
  if (precision() == Precision::BF16) return cuda::ConvAlgo::Bf16TensorCore;
  if (precision() == Precision::TF32)  // v4 in TF32 (conv2d_tf32.cu); v3 when asked for
    return g_algorithm == ConvAlgorithm::TensorCore ? cuda::ConvAlgo::TensorCore
                                                    : cuda::ConvAlgo::Tf32TensorCore;
  switch (g_algorithm) {
    case ConvAlgorithm::Naive: return cuda::ConvAlgo::Naive;
    case ConvAlgorithm::TensorCore: return cuda::ConvAlgo::TensorCore;
    case ConvAlgorithm::Bf16x6: return cuda::ConvAlgo::Bf16x6TensorCore;  // fp32 on v4's GEMM
    case ConvAlgorithm::Bf16TensorCore:
    case ConvAlgorithm::Wgmma: return cuda::ConvAlgo::Bf16TensorCore;  // v5: its block shape
    default: return cuda::ConvAlgo::Tiled;
  }
}
}  // namespace
#endif

Conv2dShape conv2d_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  Conv2dShape s;
  s.n = x[0];
  s.h = x[1];
  s.w = x[2];
  s.c_in = x[3];
  s.kh = static_cast<int>(w[0]);
  s.kw = static_cast<int>(w[1]);
  s.c_out = w[3];
  s.stride = p.stride;
  s.pad_top = p.pad_top;
  s.pad_left = p.pad_left;
  s.pad_bottom = p.pad_bottom;
  s.pad_right = p.pad_right;
  return s;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  return conv2d_add(x, w, b, p, Tensor(), Tensor());
}

namespace {

// y += v[n] broadcast over each sample's pixels, then y += r: the adds conv2d_add fuses,
// as separate passes (the CPU kernels; v1-v3 do the same inside cuda::conv2d_forward).
template <class T>
void add_after(const BroadcastShape& bs, const Tensor& v, const Tensor& r, const Tensor& y) {
  if (v.defined()) cpu::broadcast_add_forward<T>(bs, y.data<T>(), v.data<T>(), y.data<T>());
  if (r.defined()) cpu::add_forward<T>(y.numel(), y.data<T>(), r.data<T>(), y.data<T>());
}

// The shape of conv2d_add(x, w, b, p, v, r) after the checks of shapes and devices every
// variant makes (dtypes are each variant's).
Conv2dShape checked_shape(const Tensor& x, const Tensor& w, const Tensor& b,
                          const Conv2dParams& p, const Tensor& v, const Tensor& r) {
  detail::check_ndim("conv2d", "x", x, 4);
  detail::check_ndim("conv2d", "w", w, 4);
  const Conv2dShape s = conv2d_shape(x.shape(), w.shape(), p);
  CHECK(w.shape()[2] == s.c_in, "op 'conv2d': w " << w.describe() << " expects "
                                                  << w.shape()[2] << " input channels, x "
                                                  << x.describe() << " has " << s.c_in);
  CHECK(p.stride >= 1 && p.pad_top >= 0 && p.pad_left >= 0 && p.pad_bottom >= 0 &&
            p.pad_right >= 0,
        "op 'conv2d': stride must be >= 1 and padding >= 0, got stride " << p.stride);
  CHECK(s.h + s.pad_top + s.pad_bottom >= s.kh && s.w + s.pad_left + s.pad_right >= s.kw,
        "op 'conv2d': kernel " << s.kh << "x" << s.kw << " is larger than the padded input "
                               << x.describe());
  for (const Tensor* t : {&w, &b, &v, &r})
    CHECK(!t->defined() || t->device() == x.device(),
          "op 'conv2d': " << t->describe() << " is not on the device of x " << x.describe());
  CHECK(!b.defined() || b.shape() == Shape{s.c_out},
        "op 'conv2d': b " << b.describe() << " must be (" << s.c_out << ")");
  CHECK(!v.defined() || v.shape() == Shape({s.n, s.c_out}),
        "op 'conv2d': the per-sample addend v " << v.describe() << " must be (" << s.n << ", "
                                                << s.c_out << ")");
  const Shape y_shape{s.n, s.out_h(), s.out_w(), s.c_out};
  CHECK(!r.defined() || r.shape() == y_shape,
        "op 'conv2d': the residual r " << r.describe() << " must be " << y_shape.str());
  return s;
}

// True when the GPU's convolution reads bf16 activations as they are: x (and r) bf16 on a
// GPU whose convolutions are in bf16 math (precision bf16: v4, cuDNN bf16, or the faster of
// the two), w, b, v f32.
bool gpu_reads_bf16(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& v,
                    const Tensor& r) {
#if DDPM_WITH_CUDA
  return x.dtype() == DType::BF16 && x.device() == Device::CUDA &&
         cuda::conv2d_reads_bf16(cuda_algo()) && !detail::any_bf16({w, b, v}) &&
         (!r.defined() || r.dtype() == DType::BF16);
#else
  (void)x, (void)w, (void)b, (void)v, (void)r;
  return false;
#endif
}

// conv2d_add on bf16 activations on the GPU (kernels/cuda/conv2d.cuh's bf16 entries: v4 or
// cuDNN): y, dx and the residual's gradient bf16; w, b, v and their gradients fp32.
Tensor conv2d_add_bf16(const Tensor& x, const Tensor& w, const Tensor& b,
                       const Conv2dParams& p, const Tensor& v, const Tensor& r,
                       std::optional<uint64_t> counted) {
  const Conv2dShape s = checked_shape(x, w, b, p, v, r);
  const OpShape op_shape([&] { return conv_shape_text(s); });
  const uint64_t flops = counted.value_or(conv2d_flops(s));
  const BroadcastShape bs{s.n, s.out_h() * s.out_w(), s.c_out, true};
  Tensor y = Tensor::empty(Shape{s.n, s.out_h(), s.out_w(), s.c_out}, DType::BF16, x.device());
  using detail::bf16_bits;
  count_matmul_flops(flops);
  {
    OpTimer timer("conv2d", true);
    DDPM_CUDA_ONLY(
        const Tensor ws = detail::cuda_workspace(cuda::conv2d_forward_workspace(s, cuda_algo()));
        cuda::conv2d_forward(s, bf16_bits(x), w.data<float>(), ptr_or_null<float>(b),
                             bf16_bits(y), cuda_algo(), ptr_or_null<float>(ws),
                             ptr_or_null<float>(v), r.defined() ? bf16_bits(r) : nullptr,
                             bf16_copy_of(w)));
  }
  if (should_record({x, w, b, v, r})) {
    tape().record("conv2d", {y}, [s, bs, flops, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b), gv = grad_ref(v),
                                  gr = grad_ref(r)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return conv_shape_text(s); });
      // dx and dw written outright if they are the first contributions
      const GradTarget dx = grad_target(gx), dw = grad_target(gw);
      const Tensor db = detail::grad_or_null(gb);
      if (dx.buffer.defined() || dw.buffer.defined() || db.defined()) {
        count_matmul_flops(flops *
                           ((dx.buffer.defined() ? 1 : 0) + (dw.buffer.defined() ? 1 : 0)));
        OpTimer timer("conv2d backward", true);
        DDPM_CUDA_ONLY(
            const Tensor ws =
                detail::cuda_workspace(cuda::conv2d_backward_workspace(s, cuda_algo()));
            cuda::conv2d_backward(s, bf16_bits(x), w.data<float>(), bf16_bits(g[0]),
                                  dx.buffer.defined() ? bf16_bits(dx.buffer) : nullptr,
                                  ptr_or_null<float>(dw.buffer), ptr_or_null<float>(db),
                                  cuda_algo(), ptr_or_null<float>(ws), bf16_copy_of(w), dx.write,
                                  dw.write));
      }
      if (gv) detail::broadcast_add_grad(bs, g[0], grad_target(gv));
      // y = ... + r: last, so that g[0], read above, may become r's gradient
      if (gr) detail::add_to_grad(gr, g[0], detail::GradSource::HandOver);
    });
  }
  return y;
}

// dx (written outright by the GPU's kernels and oneDNN's when dx_to says Assign; the CPU
// reference adds into zeros), dw (written outright by the GPU's kernels when dw_to says
// Assign: the folded kernels of upsample_conv3x3; the CPU's add), db (any may be undefined)
// of y = conv(x, w) + b; each product counted as `flops`.
void conv_backward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& dy,
                   const GradTarget& dx_to, const GradTarget& dw_to, const Tensor& db,
                   uint64_t flops) {
  const Tensor dx = detail::buffer_for(dx_to, !detail::runs_cpu_reference(x));
  const Tensor dw = detail::buffer_on(dw_to, x.device());
  count_matmul_flops(flops * ((dx.defined() ? 1 : 0) + (dw.defined() ? 1 : 0)));
  // Under bf16 the data and weight gradients multiply rounded operands and the bias
  // gradient sums the fp32 incoming gradient (what v4 does): two calls.
  const bool split = detail::rounds_operands(x) && x.device() == Device::CPU;
  const Tensor xo = split ? detail::matmul_operand(x) : x;
  const Tensor wo = split ? detail::matmul_operand(w) : w;
  const Tensor go = split ? detail::matmul_operand(dy) : dy;
  const Tensor db_with_products = split ? Tensor() : db;
  dispatch("conv2d backward", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::conv2d_backward<T>(s, xo.data<T>(), wo.data<T>(), go.data<T>(), ptr_or_null<T>(dx),
                            ptr_or_null<T>(dw), ptr_or_null<T>(db_with_products));
    if (split && db.defined())
      cpu::conv2d_backward<T>(s, x.data<T>(), w.data<T>(), dy.data<T>(), nullptr, nullptr,
                              db.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(
        cpu_fast::conv2d_backward(s, xo.data<float>(), wo.data<float>(), go.data<float>(),
                                  ptr_or_null<float>(dx), ptr_or_null<float>(dw),
                                  ptr_or_null<float>(db_with_products), dx_to.write);
        // the reference's bias gradient: a column sum (oneDNN's comes with a wgrad)
        if (split && db.defined()) cpu::conv2d_backward<float>(
            s, x.data<float>(), w.data<float>(), dy.data<float>(), nullptr, nullptr,
            db.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(
        // v4 and cuDNN need their workspace for every pass (the staged operands)
        const bool workspace = dw.defined() || db.defined() ||
                               cuda::conv2d_dgrad_uses_workspace(cuda_algo());
        const Tensor ws = detail::cuda_workspace(
            workspace ? cuda::conv2d_backward_workspace(s, cuda_algo()) : 0);
        cuda::conv2d_backward(s, x.data<float>(), w.data<float>(), dy.data<float>(),
                              ptr_or_null<float>(dx), ptr_or_null<float>(dw),
                              ptr_or_null<float>(db), cuda_algo(), ptr_or_null<float>(ws),
                              bf16_copy_of(w), dx_to.write, dw_to.write));
  });
}

// conv2d_add, each product counted as `counted`, or as conv2d_flops when it is empty.
Tensor conv2d_add_impl(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                       const Tensor& v, const Tensor& r, std::optional<uint64_t> counted) {
  CHECK(x.defined() && w.defined(), "op 'conv2d': x and w must be defined");
  if (gpu_reads_bf16(x, w, b, v, r)) return conv2d_add_bf16(x, w, b, p, v, r, counted);
  if (detail::any_bf16({x, w, b, v, r}))  // the CPU, and the GPU's other kernels
    return cast(conv2d_add_impl(detail::widen(x), detail::widen(w), detail::widen(b), p,
                                detail::widen(v), detail::widen(r), counted),
                DType::BF16);
  detail::check_float("conv2d", "x", x);
  for (const Tensor* t : {&w, &b, &v, &r})
    if (t->defined()) detail::check_compatible("conv2d", "w, b, v and r", *t, "x", x);
  const Conv2dShape s = checked_shape(x, w, b, p, v, r);
  const OpShape op_shape([&] { return conv_shape_text(s); });
  const Shape y_shape{s.n, s.out_h(), s.out_w(), s.c_out};
  const BroadcastShape bs{s.n, s.out_h() * s.out_w(), s.c_out, true};
  Tensor y = Tensor::empty(y_shape, x.dtype(), x.device());
  const uint64_t flops = counted.value_or(conv2d_flops(s));
  count_matmul_flops(flops);
  // The CPU kernels get rounded operands under Precision::BF16 / TF32; the CUDA kernels
  // (v4 / v3, cuDNN) round them themselves (v4 also adds v and r in its epilogue).
  const bool on_cpu = x.device() == Device::CPU;
  const Tensor x_op = on_cpu ? detail::matmul_operand(x) : x;
  const Tensor w_op = on_cpu ? detail::matmul_operand(w) : w;
  dispatch("conv2d", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::conv2d_forward<T>(s, x_op.data<T>(), w_op.data<T>(), ptr_or_null<T>(b), y.data<T>());
    add_after<T>(bs, v, r, y);
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::conv2d_forward(s, x_op.data<float>(), w_op.data<float>(),
                                                ptr_or_null<float>(b), y.data<float>()));
    add_after<float>(bs, v, r, y);
  }, [&] {
    DDPM_CUDA_ONLY(
        const Tensor ws = detail::cuda_workspace(cuda::conv2d_forward_workspace(s, cuda_algo()));
        cuda::conv2d_forward(s, x.data<float>(), w.data<float>(), ptr_or_null<float>(b),
                             y.data<float>(), cuda_algo(), ptr_or_null<float>(ws),
                             ptr_or_null<float>(v), ptr_or_null<float>(r), bf16_copy_of(w)));
  });
  if (should_record({x, w, b, v, r})) {
    tape().record("conv2d", {y}, [s, bs, flops, x, w, gx = grad_ref(x), gw = grad_ref(w),
                                  gb = grad_ref(b), gv = grad_ref(v),
                                  gr = grad_ref(r)](const std::vector<Tensor>& g) {
      const OpShape backward_shape([&] { return conv_shape_text(s); });
      const Tensor db = detail::grad_or_null(gb);
      if (gx || gw || db.defined())
        conv_backward(s, x, w, g[0], grad_target(gx), grad_target(gw), db, flops);
      if (gv) detail::broadcast_add_grad(bs, g[0], grad_target(gv));  // y = ... + v[n]
      // y = ... + r: last, so that g[0], read above, may become r's gradient
      if (gr) detail::add_to_grad(gr, g[0], detail::GradSource::HandOver);
    });
  }
  return y;
}

}  // namespace

Tensor conv2d_add(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                  const Tensor& v, const Tensor& r) {
  return conv2d_add_impl(x, w, b, p, v, r, std::nullopt);
}

namespace detail {
Tensor conv2d_counted(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                      uint64_t flops) {
  return conv2d_add_impl(x, w, b, p, Tensor(), Tensor(), flops);
}
}  // namespace detail

}  // namespace ddpm
