// Tensor: a handle to shared, contiguous, typed storage on one device.
//
//   Storage     owns bytes on a device (host memory, or a block of the CUDA caching allocator)
//   TensorImpl  a window on a Storage (byte offset), a Shape, a DType, and autograd state
//   Tensor      a shared_ptr<TensorImpl>; copying a Tensor copies the handle, not the data
//
// Tensors are always contiguous (row-major); a view (reshape) shares the storage with a new
// shape. Parameters are windows on the one flat parameter buffer (engine/parameters.h).
// Autograd state lives in a GradSlot: the accumulated gradient, created on first accumulation,
// except for parameters, whose grads are windows on the flat gradient buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace ddpm {

class Storage {
 public:
  Storage(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  // Writes, counted so that a copy derived from the contents knows when it is stale
  // (engine/weight_copy.h): Tensor::copy_from and zero, the in-place ops (accumulate,
  // scale_in_place) and the optimiser advance it. Any other kernel that writes a buffer which
  // may have a derived copy (the flat parameters) through a raw pointer must call
  // note_write() too, or the copy would go on serving old values.
  uint64_t version() const { return version_; }
  void note_write() { ++version_; }

  // A bf16 copy of f32 contents (engine/weight_copy.h: the weights' copy under precision
  // bf16), and the version it was made at; bits is null when there is none.
  struct Bf16Copy {
    std::shared_ptr<Storage> bits;
    uint64_t version = 0;
  };
  Bf16Copy& bf16_copy() { return bf16_copy_; }

 private:
  Device device_;
  size_t bytes_;
  void* data_;
  uint64_t version_ = 0;
  Bf16Copy bf16_copy_;
};

struct TensorImpl;

// Autograd state of one tensor that requires grad. Op records on the tape hold these slots,
// not the tensors, so an output's storage is freed as soon as nobody (user code or a backward
// rule that saved it) holds it, while its gradient still has a place to accumulate.
struct GradSlot {
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  bool is_leaf = true;                // leaves (inputs, parameters) keep their grad after
                                      // backward; op outputs' grads are freed as it passes
  std::shared_ptr<TensorImpl> grad;   // accumulated d(loss)/d(tensor); null until first use
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;   // null for a parameter not yet placed in the flat buffer
  size_t offset = 0;                  // bytes from storage->data()
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  std::shared_ptr<GradSlot> grad_slot;  // non-null iff the tensor requires grad
  bool is_parameter = false;          // a window on the flat parameter buffer
  std::string name;                   // set for parameters; used in error messages
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  template <class T>
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values,
                            Device device = Device::CPU);

  // ---- properties ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  int64_t numel() const { return impl().shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::string& name() const { return impl().name; }
  // A short description for error messages: "f32 cuda (3, 5, 7, 65)".
  std::string describe() const;

  // ---- data access ----
  void* raw() const;                        // device pointer to the first element
  template <class T> T* data() const;       // typed; checks the dtype
  template <class T> std::vector<T> to_vector() const;  // copies to the host
  double item() const;                      // the value of a one-element tensor

  // ---- copies and views ----
  Tensor to(Device device) const;           // a copy on `device` (a handle to *this if same)
  Tensor to(DType dtype) const;             // a converted copy (CPU only; *this if same)
  Tensor clone() const;                     // a deep copy, no autograd history
  Tensor view(const Shape& shape) const;    // same storage, new shape (no autograd record:
                                            // use ops::reshape inside a differentiated graph)
  // A view of `shape` starting `offset` elements into this tensor's data (e.g. one
  // parameter's window on a flat buffer). No autograd record.
  Tensor window(int64_t offset, const Shape& shape) const;
  // Data writes through a handle: const like a const pointer, not a pointer to const.
  void copy_from(const Tensor& src) const;  // same shape and dtype; any devices
  void zero() const;                        // set every element to 0

  // ---- autograd ----
  bool requires_grad() const { return impl().grad_slot != nullptr; }
  Tensor& set_requires_grad(bool on);       // on a leaf: start (or stop) tracking gradients
  Tensor grad() const;                      // undefined Tensor if no gradient yet
  void zero_grad();                         // drop (or, for parameters, zero) the gradient

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// ---- template definitions ----

template <class T>
T* Tensor::data() const {
  CHECK(dtype() == dtype_of<T>::value, "tensor " << describe() << " accessed as "
                                                 << dtype_name(dtype_of<T>::value));
  return static_cast<T*>(raw());
}

template <class T>
Tensor Tensor::from_vector(const Shape& shape, const std::vector<T>& values, Device device) {
  CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
        "from_vector: " << values.size() << " values for shape " << shape.str() << " ("
                        << shape.numel() << " elements)");
  Tensor t = empty(shape, dtype_of<T>::value, device);
  device_copy(t.raw(), device, values.data(), Device::CPU, t.nbytes());
  return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  CHECK(dtype() == dtype_of<T>::value, "to_vector: tensor " << describe() << " read as "
                                                            << dtype_name(dtype_of<T>::value));
  std::vector<T> out(static_cast<size_t>(numel()));
  device_copy(out.data(), Device::CPU, raw(), device(), nbytes());
  return out;
}

}  // namespace ddpm
