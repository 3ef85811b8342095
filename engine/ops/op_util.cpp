#include "engine/ops/op_util.h"

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

}  // namespace ddpm::detail
