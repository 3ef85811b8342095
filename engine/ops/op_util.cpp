#include "engine/ops/op_util.h"

#include "kernels/cpu/elementwise.h"
#if DDPM_WITH_CUDA
#include "kernels/cuda/elementwise.cuh"
#endif

namespace ddpm {

namespace {
#if DDPM_WITH_CPU_FAST
CpuKernels g_cpu_kernels = CpuKernels::Fast;
#else
CpuKernels g_cpu_kernels = CpuKernels::Reference;
#endif
}  // namespace

bool cpu_fast_kernels_built() {
#if DDPM_WITH_CPU_FAST
  return true;
#else
  return false;
#endif
}

void set_cpu_kernels(CpuKernels k) {
  CHECK(k == CpuKernels::Reference || cpu_fast_kernels_built(),
        "the fast CPU kernels are not in this build (oneDNN and OpenBLAS were not found at "
        "configure time; scripts/setup.sh installs them): use the reference kernels");
  g_cpu_kernels = k;
}

CpuKernels cpu_kernels() { return g_cpu_kernels; }

namespace {
Precision g_precision = Precision::F32;
}  // namespace

void set_precision(Precision p) { g_precision = p; }
Precision precision() { return g_precision; }

}  // namespace ddpm

namespace ddpm::detail {

void check_float(const char* op, const char* name, const Tensor& x) {
  CHECK(x.defined(), "op '" << op << "': " << name << " is undefined");
  CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64,
        "op '" << op << "': " << name << " must be f32 or f64, got " << x.describe());
}

void check_same(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                const Tensor& b) {
  check_float(op, a_name, a);
  check_float(op, b_name, b);
  CHECK(a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == b.device(),
        "op '" << op << "': " << a_name << " " << a.describe() << " and " << b_name << " "
               << b.describe() << " must have the same shape, dtype and device");
}

void check_compatible(const char* op, const char* name, const Tensor& x, const char* ref_name,
                      const Tensor& ref) {
  check_float(op, name, x);
  CHECK(x.dtype() == ref.dtype() && x.device() == ref.device(),
        "op '" << op << "': " << name << " " << x.describe() << " must have the dtype and "
               << "device of " << ref_name << " " << ref.describe());
}

void check_ndim(const char* op, const char* name, const Tensor& x, int ndim) {
  CHECK(x.shape().ndim() == ndim, "op '" << op << "': " << name << " must have " << ndim
                                         << " dimensions, got " << x.describe());
}

bool rounds_operands(const Tensor& t) {
  return precision() != Precision::F32 && t.dtype() == DType::F32;
}

namespace {
Tensor rounded(const Tensor& t, bool bf16) {
  Tensor r = Tensor::empty(t.shape(), DType::F32, t.device());
  const int64_t n = t.numel();
  const float* x = t.data<float>();
  float* y = r.data<float>();
  if (t.device() == Device::CUDA) {
    DDPM_CUDA_ONLY(bf16 ? cuda::round_to_bf16(n, x, y) : cuda::round_to_tf32(n, x, y));
  } else {
    bf16 ? cpu::round_to_bf16(n, x, y) : cpu::round_to_tf32(n, x, y);
  }
  return r;
}
}  // namespace

Tensor matmul_operand(const Tensor& t) {
  return rounds_operands(t) ? rounded(t, precision() == Precision::BF16) : t;
}

Tensor bf16_rounded(const Tensor& t) {
  CHECK(t.dtype() == DType::F32, "bf16_rounded: " << t.describe() << " is not f32");
  return rounded(t, true);
}

}  // namespace ddpm::detail
