#include "engine/shape.h"

#include <sstream>

#include "engine/check.h"

namespace ddpm {

Shape::Shape(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) push(d);
}

Shape::Shape(const std::vector<int64_t>& dims) {
  for (int64_t d : dims) push(d);
}

void Shape::push(int64_t d) {
  CHECK(ndim_ < kMaxDims, "a shape has at most " << kMaxDims << " dimensions");
  CHECK(d >= 0, "shape dimensions must be >= 0, got " << d);
  dims_[ndim_++] = d;
}

int64_t Shape::operator[](int i) const {
  const int j = i < 0 ? i + ndim_ : i;
  CHECK(j >= 0 && j < ndim_, "dimension " << i << " out of range for shape " << str());
  return dims_[j];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i)
    CHECK(!__builtin_mul_overflow(n, dims_[i], &n), "shape " << str() << " has more than 2^63 elements");
  return n;
}

Shape Shape::with_last(int64_t c) const {
  CHECK(ndim_ > 0, "with_last on a scalar shape");
  Shape s = *this;
  s.dims_[ndim_ - 1] = c;
  return s;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (int i = 0; i < ndim_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ")";
  return os.str();
}

}  // namespace ddpm
