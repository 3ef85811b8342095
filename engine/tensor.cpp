#include "engine/tensor.h"

#include <sstream>

namespace ddpm {

Storage::Storage(Device device, size_t bytes)
    : device_(device), bytes_(bytes), data_(device_alloc(device, bytes)) {}

Storage::~Storage() { device_free(device_, data_, bytes_); }

TensorImpl& Tensor::impl() const {
  CHECK(impl_ != nullptr, "use of an undefined tensor");
  return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->device = device;
  impl->storage =
      std::make_shared<Storage>(device, static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero();
  return t;
}

namespace {

// Reads element i of a host buffer of dtype dt as a double, and writes one.
double load_as_double(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::BF16: return bf16_to_float(static_cast<const bf16*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

void store_from_double(void* p, DType dt, int64_t i, double v) {
  switch (dt) {
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::F64: static_cast<double*>(p)[i] = v; break;
    case DType::BF16: static_cast<bf16*>(p)[i] = float_to_bf16(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
  }
}

}  // namespace

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor host = empty(shape, dtype, Device::CPU);
  for (int64_t i = 0; i < host.numel(); ++i) store_from_double(host.raw(), dtype, i, value);
  return host.to(device);
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined";
  std::ostringstream os;
  if (!name().empty()) os << "'" << name() << "' ";
  os << dtype_name(dtype()) << " " << device_name(device()) << " " << shape().str();
  return os.str();
}

void* Tensor::raw() const {
  const TensorImpl& t = impl();
  CHECK(t.storage != nullptr,
        "tensor " << describe() << " has no storage (a parameter used before "
                                   "ParameterStore::finalize?)");
  return static_cast<char*>(t.storage->data()) + t.offset;
}

double Tensor::item() const {
  CHECK(numel() == 1, "item() needs a one-element tensor, got " << describe());
  Tensor host = to(Device::CPU);
  return load_as_double(host.raw(), dtype(), 0);
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor t = empty(shape(), dtype(), target);
  device_copy(t.raw(), target, raw(), device(), nbytes());
  return t;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  CHECK(device() == Device::CPU, "dtype conversion runs on the CPU; got " << describe());
  Tensor t = empty(shape(), target, Device::CPU);
  for (int64_t i = 0; i < numel(); ++i)
    store_from_double(t.raw(), target, i, load_as_double(raw(), dtype(), i));
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device());
  device_copy(t.raw(), device(), raw(), device(), nbytes());
  return t;
}

Tensor Tensor::view(const Shape& new_shape) const {
  CHECK(new_shape.numel() == numel(),
        "view of " << describe() << " as " << new_shape.str() << ": element counts differ");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = new_shape;
  impl->dtype = dtype();
  impl->device = device();
  return Tensor(std::move(impl));
}

Tensor Tensor::window(int64_t offset, const Shape& shape) const {
  CHECK(offset >= 0 && offset + shape.numel() <= numel(),
        "window of " << shape.str() << " at element " << offset << " does not fit in "
                     << describe());
  Tensor t = view(Shape{numel()});
  t.impl().offset += static_cast<size_t>(offset) * dtype_size(dtype());
  t.impl().shape = shape;
  return t;
}

void Tensor::copy_from(const Tensor& src) const {
  CHECK(src.shape() == shape() && src.dtype() == dtype(),
        "copy_from: destination " << describe() << " and source " << src.describe()
                                  << " differ in shape or dtype");
  device_copy(raw(), device(), src.raw(), src.device(), nbytes());
  impl().storage->note_write();
}

void Tensor::zero() const {
  device_zero(raw(), device(), nbytes());
  impl().storage->note_write();
}

Tensor& Tensor::set_requires_grad(bool on) {
  TensorImpl& t = impl();
  if (!on) {
    t.grad_slot.reset();
  } else if (!t.grad_slot) {
    t.grad_slot = std::make_shared<GradSlot>();
    t.grad_slot->shape = t.shape;
    t.grad_slot->dtype = t.dtype;
    t.grad_slot->device = t.device;
  }
  return *this;
}

Tensor Tensor::grad() const {
  const TensorImpl& t = impl();
  return t.grad_slot ? Tensor(t.grad_slot->grad) : Tensor();
}

void Tensor::zero_grad() {
  TensorImpl& t = impl();
  if (!t.grad_slot || !t.grad_slot->grad) return;
  if (t.is_parameter) {
    Tensor(t.grad_slot->grad).zero();  // a window on the flat gradient buffer: keep it
  } else {
    t.grad_slot->grad.reset();
  }
}

}  // namespace ddpm
