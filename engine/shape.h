// A tensor shape: up to 4 dimensions, row-major and contiguous. Images are NHWC.
// ndim 0 is a scalar (numel 1).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace ddpm {

class Shape {
 public:
  static constexpr int kMaxDims = 4;

  Shape() = default;                          // scalar
  Shape(std::initializer_list<int64_t> dims);  // e.g. Shape{N, H, W, C}
  explicit Shape(const std::vector<int64_t>& dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const;             // negative i counts from the end
  int64_t numel() const;
  int64_t last() const { return ndim_ == 0 ? 1 : dims_[ndim_ - 1]; }
  // Product of all dimensions but the last: the row count of the (rows, last) matrix view.
  int64_t rows() const { return numel() / (ndim_ == 0 ? 1 : last()); }
  Shape with_last(int64_t c) const;            // same shape, last dimension replaced

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;                     // "(3, 5, 7, 65)"

 private:
  void push(int64_t d);
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> dims_{};
};

}  // namespace ddpm
