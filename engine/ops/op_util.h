// Helpers the op entries share: argument checks that name the op and the tensor, and the
// dispatch from a tensor's device and dtype to a typed kernel call.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "engine/autograd.h"
#include "engine/op_profile.h"
#include "engine/ops.h"
#include "engine/tensor.h"

#if DDPM_WITH_CUDA
#define DDPM_CUDA_ONLY(...) __VA_ARGS__
#else
#define DDPM_CUDA_ONLY(...) THROW_ERROR("built without CUDA")
#endif
#if DDPM_WITH_CPU_FAST
#define DDPM_CPU_FAST_ONLY(...) __VA_ARGS__
#else
#define DDPM_CPU_FAST_ONLY(...) THROW_ERROR("built without the fast CPU kernels")
#endif

namespace ddpm::detail {

// x must be defined and hold f32 or f64.
void check_float(const char* op, const char* name, const Tensor& x);
// a and b: same shape, dtype and device.
void check_same(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                const Tensor& b);
// x: same dtype and device as ref (shape free).
void check_compatible(const char* op, const char* name, const Tensor& x, const char* ref_name,
                      const Tensor& ref);
void check_ndim(const char* op, const char* name, const Tensor& x, int ndim);

// Calls f(T{}) with T = float or double for a CPU tensor. CUDA kernels arrive with the CUDA
// issues; until an op has one, a CUDA tensor fails here naming the op.
template <class F>
void dispatch_cpu(const char* op, const Tensor& x, F&& f) {
  CHECK(x.device() == Device::CPU,
        "op '" << op << "' has no CUDA kernel yet; got " << x.describe());
  switch (x.dtype()) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    default: THROW_ERROR("op '" << op << "' supports f32 and f64, got " << x.describe());
  }
}

// Calls cpu(T{}) for a CPU tensor (T = float or double), or cuda() for a CUDA tensor, which
// must be f32. Op entries write the CUDA call inside DDPM_CUDA_ONLY(...) so a build without
// CUDA still compiles (it can hold no CUDA tensor, so that branch never runs there). The
// call is timed under the op's name when op profiling is on (engine/op_profile.h: the GPU's
// time for a CUDA call, the CPU's for a CPU call).
template <class Cpu, class Cuda>
void dispatch(const char* op, const Tensor& x, Cpu&& cpu, Cuda&& cuda) {
  OpTimer timer(op, x.device() == Device::CUDA);
  if (x.device() == Device::CUDA) {
    CHECK(x.dtype() == DType::F32, "op '" << op << "' on CUDA supports f32, got " << x.describe());
    cuda();
    return;
  }
  dispatch_cpu(op, x, cpu);
}

// Which CPU kernels an op on x runs: the fast ones for an f32 CPU tensor when they are
// selected (set_cpu_kernels), the reference ones otherwise.
inline bool runs_cpu_fast(const Tensor& x) {
  return x.device() == Device::CPU && x.dtype() == DType::F32 && cpu_kernels() == CpuKernels::Fast;
}
inline bool runs_cpu_reference(const Tensor& x) {
  return x.device() == Device::CPU && !runs_cpu_fast(x);
}

// The same with the fast CPU kernels: fast() when runs_cpu_fast(x), cpu(T{}) or cuda()
// otherwise. The op entry names every kernel it can run in one call: reference, fast, CUDA.
// Fast bodies are written inside DDPM_CPU_FAST_ONLY(...).
template <class Cpu, class Fast, class Cuda>
void dispatch(const char* op, const Tensor& x, Cpu&& cpu, Fast&& fast, Cuda&& cuda) {
  if (runs_cpu_fast(x)) {
    OpTimer timer(op, false);
    fast();
    return;
  }
  dispatch(op, x, cpu, cuda);
}

// A typed pointer to t's data, or null when t is undefined (optional inputs and grads).
template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Scratch memory for a CUDA kernel (its *_workspace() size, in floats), or an undefined
// tensor when it needs none. From the caching allocator: warm steps make no cudaMalloc.
inline Tensor cuda_workspace(int64_t floats) {
  return floats > 0 ? Tensor::empty(Shape{floats}, DType::F32, Device::CUDA) : Tensor();
}

// dv += the gradient of broadcast_add(x, v) with respect to v, given the output's gradient g:
// column sums of g (per sample when s.per_sample), written outright by the GPU's kernel when
// dv is v's first gradient (the time embedding's, in a ResBlock). engine/ops/elementwise.cpp.
void broadcast_add_grad(const BroadcastShape& s, const Tensor& g, const GradTarget& dv);

// conv2d(x, w, b, p) counting `flops` for each of its products (the forward, dx, dw) in
// engine/flops.h's count instead of its own: for an op made of convolutions that stand for
// another one (upsample_conv3x3's four phases each count a quarter of the convolution of the
// upsampled map they compute: the model's FLOPs, whatever the algorithm). engine/ops/conv2d.cpp.
Tensor conv2d_counted(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                      uint64_t flops);

// Under Precision::BF16 / TF32, an f32 operand of a matrix product rounded to bf16 / TF32 (a
// new tensor on the same device); under F32, t itself.
bool rounds_operands(const Tensor& t);
Tensor matmul_operand(const Tensor& t);
// float(bf16(t)) for an f32 t, whatever the precision (a new tensor on t's device, recorded
// on no tape).
Tensor bf16_rounded(const Tensor& t);

// ---- bf16 storage (engine/ops/cast.cpp) ----
// t's data as bf16 bits (kernels/bf16.h), the element type the kernels take; t must be bf16.
uint16_t* bf16_bits(const Tensor& t);
// An op without a bf16 kernel of its own runs on f32 copies of its bf16 inputs (widen: cast,
// recorded, so each copy's gradient flows back and is rounded into the bf16 gradient) and
// casts its output back to bf16: storage rounded at the op's boundary, fp32 math inside, the
// reference every bf16 kernel is held to. An entry starts with
//   if (detail::any_bf16({x, w})) return cast(op(detail::widen(x), detail::widen(w)), DType::BF16);
bool any_bf16(std::initializer_list<Tensor> ts);
Tensor widen(const Tensor& t);  // cast(t, F32) when bf16; t otherwise (undefined stays so)
// True when every defined tensor of ts is bf16 on the GPU: the ops with bf16 CUDA kernels of
// their own (data movement, adds) run them; the CPU runs them on widened copies.
bool cuda_bf16(std::initializer_list<Tensor> ts);
// dst += alpha src with either or both bf16 (the other f32): fp32 sums, rounded once into
// a bf16 dst. accumulate() sends such pairs here.
void accumulate_stored(const Tensor& dst, const Tensor& src, double alpha);

// The gradient buffer of a slot, or an undefined tensor when that input needs no gradient.
inline Tensor grad_or_null(const GradRef& slot) { return slot ? grad_buffer(slot) : Tensor(); }

// The buffer of a gradient target (engine/autograd.h) for kernels that take its GradWrite
// (written outright if new): as it is; for kernels that only add: zero-filled first if new.
inline Tensor buffer_for(const GradTarget& t, bool kernels_take_write) {
  return t.buffer.defined() && !kernels_take_write ? t.for_accumulating() : t.buffer;
}
// The same for the kernels of `device`: the GPU's take the GradWrite, the CPU's only add.
// (The convolution's and group norm's fast CPU kernels take it too: their ops ask
// buffer_for(t, !runs_cpu_reference(x)).)
inline Tensor buffer_on(const GradTarget& t, Device device) {
  return buffer_for(t, device != Device::CPU);
}

// Adds g to the slot's gradient (engine/autograd.h). As the first contribution, a g the rule
// is finished with (HandOver: nothing reads or writes it after this call, and no other slot
// is given it) becomes the gradient itself, with no pass over it; a Borrowed g is copied
// (one pass, instead of a zero fill and an add); a g of the other float dtype (f32 for a
// bf16 gradient, or the reverse: cast's rule) is converted, also in one pass.
enum class GradSource { Borrowed, HandOver };
void add_to_grad(const GradRef& slot, const Tensor& g, GradSource source);

}  // namespace ddpm::detail
