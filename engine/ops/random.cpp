// Op entries: randn, rand_uniform, dropout, timestep_embedding.
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/random.h"
#include "kernels/cpu_fast/random.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/random.cuh"
#endif

namespace ddpm {

using detail::dispatch;

namespace {

Tensor philox_fill(const Shape& shape, uint64_t seed, StepKey stream, Device device,
                   bool normal) {
  CHECK(device != Device::CPU || !stream.live(),
        "randn: a stream read from device memory (a captured step's) for a CPU tensor");
  Tensor y = Tensor::empty(shape, DType::F32, device);
  if (device == Device::CUDA) {
#if DDPM_WITH_CUDA
    (normal ? cuda::normal_fill : cuda::uniform_fill)(y.numel(), seed, stream, y.data<float>(),
                                                      nullptr);
#endif
  } else {
    (normal ? cpu::normal_fill : cpu::uniform_fill)(y.numel(), seed, stream.base,
                                                    y.data<float>());
  }
  return y;
}

}  // namespace

Tensor randn(const Shape& shape, uint64_t seed, StepKey stream, Device device) {
  return philox_fill(shape, seed, stream, device, true);
}

Tensor rand_uniform(const Shape& shape, uint64_t seed, uint64_t stream, Device device) {
  return philox_fill(shape, seed, stream, device, false);
}

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t stream) {
  if (detail::any_bf16({x})) return cast(dropout(detail::widen(x), p, seed, stream), DType::BF16);
  detail::check_float("dropout", "x", x);
  CHECK(p >= 0.0 && p < 1.0, "op 'dropout': p must be in [0, 1), got " << p);
  const float pf = static_cast<float>(p);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch("dropout", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::dropout_forward<T>(x.numel(), pf, seed, stream, x.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CPU_FAST_ONLY(cpu_fast::dropout_forward(x.numel(), pf, seed, stream, x.data<float>(),
                                                 y.data<float>()));
  }, [&] {
    DDPM_CUDA_ONLY(cuda::dropout_forward(x.numel(), pf, seed, stream, x.data<float>(), y.data<float>()));
  });
  if (should_record({x})) {
    tape().record("dropout", {y}, [pf, seed, stream, gx = grad_ref(x)](
                                      const std::vector<Tensor>& g) {
      Tensor dx = grad_buffer(gx);
      dispatch("dropout backward", dx, [&](auto tag) {
        using T = decltype(tag);
        cpu::dropout_backward<T>(dx.numel(), pf, seed, stream, g[0].data<T>(), dx.data<T>());
      }, [&] {
        DDPM_CPU_FAST_ONLY(cpu_fast::dropout_backward(dx.numel(), pf, seed, stream,
                                                      g[0].data<float>(), dx.data<float>()));
      }, [&] {
        DDPM_CUDA_ONLY(cuda::dropout_backward(dx.numel(), pf, seed, stream, g[0].data<float>(),
                                              dx.data<float>()));
      });
    });
  }
  return y;
}

Tensor timestep_embedding(const Tensor& t, int64_t dim) {
  detail::check_float("timestep_embedding", "t", t);
  detail::check_ndim("timestep_embedding", "t", t, 1);
  CHECK(dim >= 4 && dim % 2 == 0,
        "op 'timestep_embedding': dim must be even and >= 4, got " << dim);
  Tensor y = Tensor::empty(Shape{t.shape()[0], dim}, t.dtype(), t.device());
  dispatch("timestep_embedding", t, [&](auto tag) {
    using T = decltype(tag);
    cpu::timestep_embedding<T>(t.shape()[0], dim, t.data<T>(), y.data<T>());
  }, [&] {
    DDPM_CUDA_ONLY(cuda::timestep_embedding(t.shape()[0], dim, t.data<float>(), y.data<float>()));
  });
  // Timesteps are data, not learned: there is no backward rule. If t requires grad the
  // node is recorded without one, and backward fails naming this op.
  if (should_record({t})) tape().record("timestep_embedding", {y}, nullptr);
  return y;
}

}  // namespace ddpm
