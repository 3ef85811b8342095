// Op entries: upsample_nearest2x, concat, split (channel axis), reshape.
#include <algorithm>
#include <numeric>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/resample.h"
#include "kernels/cuda/resample.cuh"

namespace ddpm {

using detail::dispatch;

Tensor upsample_nearest2x(const Tensor& x) {
  if (detail::any_bf16({x}) && x.device() == Device::CPU)  // the GPU has bf16 kernels
    return cast(upsample_nearest2x(detail::widen(x)), DType::BF16);
  if (detail::cuda_bf16({x})) {
    detail::check_ndim("upsample_nearest2x", "x", x, 4);
    const UpsampleShape s{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]};
    Tensor y = Tensor::empty(Shape{s.n, 2 * s.h, 2 * s.w, s.c}, DType::BF16, Device::CUDA);
    using detail::bf16_bits;
    {
      OpTimer timer("upsample_nearest2x", true);
      DDPM_CUDA_ONLY(cuda::upsample_nearest2x_forward(s, bf16_bits(x), bf16_bits(y)));
    }
    if (should_record({x})) {
      tape().record("upsample_nearest2x", {y}, [s, gx = grad_ref(x)](const std::vector<Tensor>& g) {
        const GradTarget dx = grad_target(gx);  // written outright if it is the first
        OpTimer timer("upsample_nearest2x backward", true);
        DDPM_CUDA_ONLY(cuda::upsample_nearest2x_backward(s, bf16_bits(g[0]), bf16_bits(dx.buffer),
                                                         dx.write));
      });
    }
    return y;
  }
  detail::check_float("upsample_nearest2x", "x", x);
  detail::check_ndim("upsample_nearest2x", "x", x, 4);
  const UpsampleShape s{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]};
  Tensor y = Tensor::empty(Shape{s.n, 2 * s.h, 2 * s.w, s.c}, x.dtype(), x.device());
  dispatch("upsample_nearest2x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::upsample_nearest2x_forward<T>(s, x.data<T>(), y.data<T>());
  }, [&] { DDPM_CUDA_ONLY(cuda::upsample_nearest2x_forward(s, x.data<float>(), y.data<float>())); });
  if (should_record({x})) {
    tape().record("upsample_nearest2x", {y}, [s, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      // the GPU's kernel writes dx outright if it is the first gradient; the CPU's adds
      const GradTarget dx_to = grad_target(gx);
      const Tensor dx = detail::buffer_on(dx_to, g[0].device());
      dispatch("upsample_nearest2x backward", dx, [&](auto tag) {
        using T = decltype(tag);
        cpu::upsample_nearest2x_backward<T>(s, g[0].data<T>(), dx.data<T>());
      }, [&] {
        DDPM_CUDA_ONLY(cuda::upsample_nearest2x_backward(s, g[0].data<float>(), dx.data<float>(),
                                                         dx_to.write));
      });
    });
  }
  return y;
}

namespace {

// Copies (accumulate = false) or adds (true) the (rows, cols) block of src at column offset
// src_col into dst at column offset dst_col; both are (rows, their last dimension).
void move_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col,
                  int64_t cols, bool accumulate_into_dst) {
  const SliceShape s{src.shape().rows(), cols, src.shape().last(), dst.shape().last()};
  if (detail::cuda_bf16({src, dst})) {  // bf16 activations on the GPU
    OpTimer timer("concat/split", true);
    DDPM_CUDA_ONLY(const uint16_t* from = detail::bf16_bits(src) + src_col;
                   uint16_t* to = detail::bf16_bits(dst) + dst_col;
                   accumulate_into_dst ? cuda::slice_accumulate(s, from, to)
                                       : cuda::slice_copy(s, from, to));
    return;
  }
  dispatch("concat/split", src, [&](auto tag) {
    using T = decltype(tag);
    const T* from = src.data<T>() + src_col;
    T* to = dst.data<T>() + dst_col;
    if (accumulate_into_dst) {
      cpu::slice_accumulate<T>(s, from, to);
    } else {
      cpu::slice_copy<T>(s, from, to);
    }
  }, [&] {
    DDPM_CUDA_ONLY(const float* from = src.data<float>() + src_col;
                   float* to = dst.data<float>() + dst_col;
                   accumulate_into_dst ? cuda::slice_accumulate(s, from, to)
                                       : cuda::slice_copy(s, from, to));
  });
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs) {
  CHECK(!xs.empty(), "op 'concat': no inputs");
  const auto is_bf16 = [](const Tensor& x) { return detail::any_bf16({x}); };
  const bool all_cuda_bf16 = std::all_of(xs.begin(), xs.end(), [](const Tensor& x) {
    return detail::cuda_bf16({x});
  });
  if (std::any_of(xs.begin(), xs.end(), is_bf16) && !all_cuda_bf16) {
    std::vector<Tensor> wide;
    for (const Tensor& x : xs) wide.push_back(detail::widen(x));
    return cast(concat(wide), DType::BF16);
  }
  if (!all_cuda_bf16) detail::check_float("concat", "xs[0]", xs[0]);
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!all_cuda_bf16) detail::check_compatible("concat", "input", xs[i], "xs[0]", xs[0]);
    CHECK(xs[i].shape().ndim() >= 1 && xs[i].shape().ndim() == xs[0].shape().ndim() &&
              xs[i].shape().with_last(1) == xs[0].shape().with_last(1),
          "op 'concat': input " << i << " " << xs[i].describe()
                                << " differs from input 0 " << xs[0].describe()
                                << " in a dimension other than the last");
    total += xs[i].shape().last();
  }
  Tensor y = Tensor::empty(xs[0].shape().with_last(total), xs[0].dtype(), xs[0].device());
  std::vector<int64_t> offsets;
  int64_t col = 0;
  for (const Tensor& x : xs) {
    offsets.push_back(col);
    move_columns(x, 0, y, col, x.shape().last(), false);
    col += x.shape().last();
  }
  bool record = false;
  std::vector<GradRef> grads;
  for (const Tensor& x : xs) {
    record = record || should_record({x});
    grads.push_back(grad_ref(x));
  }
  if (record) {
    tape().record("concat", {y}, [grads, offsets](const std::vector<Tensor>& g) {
      for (size_t i = 0; i < grads.size(); ++i) {  // the first contribution copied, not added
        if (!grads[i]) continue;
        const GradTarget dx = grad_target(grads[i]);
        move_columns(g[0], offsets[i], dx.buffer, 0, dx.buffer.shape().last(),
                     dx.write == GradWrite::Accumulate);
      }
    });
  }
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes) {
  if (detail::any_bf16({x}) && x.device() == Device::CPU) {
    std::vector<Tensor> parts = split(detail::widen(x), sizes);
    for (Tensor& part : parts) part = cast(part, DType::BF16);
    return parts;
  }
  if (!detail::cuda_bf16({x})) detail::check_float("split", "x", x);
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  CHECK(x.shape().ndim() >= 1 && total == x.shape().last(),
        "op 'split': sizes add up to " << total << " but x " << x.describe()
                                       << " has last dimension " << x.shape().last());
  std::vector<Tensor> outs;
  std::vector<int64_t> offsets;
  int64_t col = 0;
  for (int64_t size : sizes) {
    CHECK(size > 0, "op 'split': sizes must be > 0, got " << size);
    Tensor y = Tensor::empty(x.shape().with_last(size), x.dtype(), x.device());
    move_columns(x, col, y, 0, size, false);
    outs.push_back(y);
    offsets.push_back(col);
    col += size;
  }
  if (should_record({x})) {
    tape().record("split", outs, [offsets, gx = grad_ref(x)](const std::vector<Tensor>& g) {
      // the parts cover every column once: the first contribution is copied, not added
      const GradTarget dx = grad_target(gx);
      for (size_t i = 0; i < g.size(); ++i)
        move_columns(g[i], 0, dx.buffer, offsets[i], g[i].shape().last(),
                     dx.write == GradWrite::Accumulate);
    });
  }
  return outs;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = x.view(shape);
  if (should_record({x})) {
    tape().record("reshape", {y}, [gx = grad_ref(x)](const std::vector<Tensor>& g) {
      detail::add_to_grad(gx, g[0], detail::GradSource::HandOver);
    });
  }
  return y;
}

}  // namespace ddpm
