// Op entries: the fused diffusion corruption and loss (kernels/cpu/diffusion_loss.h,
// kernels/cuda/diffusion_loss.cuh). They check the batch, the timesteps and the tables, pick
// the kernel for the device, the compute dtype and the x0 storage (float or bytes).
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/diffusion_loss.h"
#include "kernels/cuda/diffusion_loss.cuh"

namespace ddpm {

namespace {

void check_timesteps(const char* op, const std::vector<int32_t>& t, int64_t T) {
  for (size_t j = 0; j < t.size(); ++j)
    CHECK(t[j] >= 0 && t[j] < T, "op '" << op << "': t[" << j << "] = " << t[j]
                                        << " is outside the tables' [0, " << T << ")");
}

// The shape of the batch x0 (N, ...): dim per sample, the image geometry when it is 4-D.
DiffusionLossShape loss_shape(const char* op, const Tensor& x0, const Tensor& t,
                              const DiffusionLossSpec& spec) {
  CHECK(x0.defined() && x0.shape().ndim() >= 1,
        "op '" << op << "': x0 must be a batch (N, ...), got " << x0.describe());
  DiffusionLossShape s;
  s.n = x0.shape()[0];
  s.dim = s.n == 0 ? 0 : x0.numel() / s.n;
  if (x0.shape().ndim() == 4) {
    s.h = x0.shape()[1];
    s.w = x0.shape()[2];
    s.c = x0.shape()[3];
  }
  CHECK(x0.dtype() == DType::F32 || x0.dtype() == DType::F64 || x0.dtype() == DType::U8,
        "op '" << op << "': x0 must be f32, f64 or u8, got " << x0.describe());
  CHECK(t.defined() && t.dtype() == DType::I32 && t.shape() == Shape{s.n} &&
            t.device() == x0.device(),
        "op '" << op << "': t must be (" << s.n << ") i32 on x0's device, got "
               << (t.defined() ? t.describe() : std::string("undefined")));
  const Tensor* tables[] = {&spec.sqrt_abar, &spec.sqrt_one_minus_abar, &spec.weight};
  for (const Tensor* tab : tables) {
    CHECK(tab->defined() && tab->shape().ndim() == 1 && tab->device() == x0.device() &&
              tab->dtype() == spec.sqrt_abar.dtype(),
          "op '" << op << "': the tables must be (T) vectors of one dtype on x0's device, got "
                 << (tab->defined() ? tab->describe() : std::string("undefined")));
    CHECK(tab->shape() == spec.sqrt_abar.shape(),
          "op '" << op << "': tables of different lengths " << tab->describe() << " and "
                 << spec.sqrt_abar.describe());
  }
  detail::check_float(op, "sqrt_abar", spec.sqrt_abar);
  CHECK(x0.dtype() == DType::U8 || x0.dtype() == spec.sqrt_abar.dtype(),
        "op '" << op << "': x0 " << x0.describe() << " and the tables "
               << spec.sqrt_abar.describe() << " differ in dtype");
  CHECK(!spec.flip || (x0.dtype() == DType::U8 && x0.shape().ndim() == 4),
        "op '" << op << "': the random flip applies to a u8 (N, H, W, C) batch, got "
               << x0.describe());
  // Host timesteps are range-checked here; device ones were checked where they were made
  // (timestep_tensor), since reading them back would stall the stream.
  if (t.device() == Device::CPU) check_timesteps(op, t.to_vector<int32_t>(), spec.sqrt_abar.shape()[0]);
  CHECK(x0.device() != Device::CPU || (!spec.noise_stream.live() && !spec.flip_first.live()),
        "op '" << op << "': keys read from device memory (a captured step's) on a CPU batch");
  s.target = spec.target;
  s.noise_seed = spec.noise_seed;
  s.noise_stream = spec.noise_stream;
  s.flip = spec.flip;
  s.flip_seed = spec.flip_seed;
  s.flip_stream = spec.flip_stream;
  s.flip_first = spec.flip_first;
  return s;
}

template <class T>
DiffusionLossTables<T> tables_of(const Tensor& t, const Tensor& importance,
                                 const DiffusionLossSpec& spec) {
  DiffusionLossTables<T> tab;
  tab.t = t.data<int32_t>();
  tab.sqrt_abar = spec.sqrt_abar.data<T>();
  tab.sqrt_one_minus_abar = spec.sqrt_one_minus_abar.data<T>();
  tab.weight = spec.weight.data<T>();
  tab.importance = detail::ptr_or_null<T>(importance);
  return tab;
}

// Calls f(x0 pointer) with the batch's storage type: T (the compute type) or uint8_t.
template <class T, class F>
void with_x0(const Tensor& x0, F&& f) {
  if (x0.dtype() == DType::U8)
    f(x0.data<uint8_t>());
  else
    f(x0.data<T>());
}

}  // namespace

Tensor timestep_tensor(const std::vector<int>& t, int64_t T, Device device) {
  const std::vector<int32_t> t32(t.begin(), t.end());
  check_timesteps("timestep_tensor", t32, T);
  return Tensor::from_vector<int32_t>(Shape{static_cast<int64_t>(t.size())}, t32, device);
}

Tensor diffusion_corrupt(const Tensor& x0, const Tensor& t, const DiffusionLossSpec& spec) {
  const DiffusionLossShape s = loss_shape("diffusion_corrupt", x0, t, spec);
  Tensor x_t = Tensor::empty(x0.shape(), spec.sqrt_abar.dtype(), x0.device());
  detail::dispatch("diffusion_corrupt", spec.sqrt_abar, [&](auto tag) {
    using T = decltype(tag);
    with_x0<T>(x0, [&](const auto* x) {
      cpu::diffusion_corrupt(s, tables_of<T>(t, Tensor(), spec), x, x_t.data<T>());
    });
  }, [&] {
    DDPM_CUDA_ONLY(with_x0<float>(x0, [&](const auto* x) {
      cuda::diffusion_corrupt(s, tables_of<float>(t, Tensor(), spec), x, x_t.data<float>());
    }));
  });
  return x_t;
}

FusedDiffusionLoss diffusion_loss_fused(const Tensor& pred, const Tensor& x0, const Tensor& t,
                                        const Tensor& importance, const DiffusionLossSpec& spec) {
  const char* op = "diffusion_loss_fused";
  const DiffusionLossShape s = loss_shape(op, x0, t, spec);
  detail::check_compatible(op, "pred", pred, "sqrt_abar", spec.sqrt_abar);
  CHECK(pred.shape() == x0.shape(),
        "op '" << op << "': pred " << pred.describe() << " and x0 " << x0.describe()
               << " differ in shape");
  if (importance.defined()) {
    detail::check_compatible(op, "importance", importance, "pred", pred);
    CHECK(importance.shape() == Shape{s.n},
          "op '" << op << "': importance " << importance.describe() << " must be (" << s.n << ")");
  }
  FusedDiffusionLoss r;
  r.dpred = Tensor::empty(pred.shape(), pred.dtype(), pred.device());
  r.per_sample = Tensor::empty(Shape{s.n}, pred.dtype(), pred.device());
  r.loss = Tensor::empty(Shape{}, pred.dtype(), pred.device());
  detail::dispatch(op, pred, [&](auto tag) {
    using T = decltype(tag);
    with_x0<T>(x0, [&](const auto* x) {
      cpu::diffusion_loss(s, tables_of<T>(t, importance, spec), pred.data<T>(), x,
                          r.dpred.data<T>(), r.per_sample.data<T>(), r.loss.data<T>());
    });
  }, [&] {
    DDPM_CUDA_ONLY(
        const Tensor partial =
            Tensor::empty(Shape{std::max<int64_t>(1, s.n * cuda::loss_chunks(s))}, DType::F32,
                          Device::CUDA);
        with_x0<float>(x0, [&](const auto* x) {
          cuda::diffusion_loss(s, tables_of<float>(t, importance, spec), pred.data<float>(), x,
                               r.dpred.data<float>(), r.per_sample.data<float>(),
                               r.loss.data<float>(), partial.data<float>());
        }));
  });
  return r;
}

}  // namespace ddpm
