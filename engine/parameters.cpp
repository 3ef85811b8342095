#include "engine/parameters.h"

namespace ddpm {

Tensor ParameterStore::add(const std::string& name, const Shape& shape) {
  CHECK(!finalized(), "ParameterStore::add('" << name << "') after finalize()");
  for (const Tensor& p : params_)
    CHECK(p.name() != name, "parameter name '" << name << "' is used twice");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->name = name;
  impl->is_parameter = true;
  Tensor t(impl);
  params_.push_back(t);
  return t;
}

void ParameterStore::finalize(Device device, DType dtype) {
  CHECK(!finalized(), "ParameterStore::finalize() called twice");
  int64_t total = 0;
  for (const Tensor& p : params_) {
    offsets_.push_back(total);
    total += (p.numel() + kAlignElems - 1) / kAlignElems * kAlignElems;
  }
  data_ = Tensor::zeros(Shape{total}, dtype, device);
  grad_ = Tensor::zeros(Shape{total}, dtype, device);
  const size_t elem = dtype_size(dtype);
  for (size_t i = 0; i < params_.size(); ++i) {
    TensorImpl& p = params_[i].impl();
    p.storage = data_.impl().storage;
    p.offset = static_cast<size_t>(offsets_[i]) * elem;
    p.dtype = dtype;
    p.device = device;
    auto g = std::make_shared<TensorImpl>();
    g->storage = grad_.impl().storage;
    g->offset = p.offset;
    g->shape = p.shape;
    g->dtype = dtype;
    g->device = device;
    params_[i].set_requires_grad(true);
    p.grad_slot->grad = g;
  }
}

Tensor ParameterStore::find(const std::string& name) const {
  for (const Tensor& p : params_)
    if (p.name() == name) return p;
  THROW_ERROR("no parameter named '" << name << "'");
}

int64_t ParameterStore::count() const {
  int64_t n = 0;
  for (const Tensor& p : params_) n += p.numel();
  return n;
}

void ParameterStore::zero_grad() {
  CHECK(finalized(), "ParameterStore::zero_grad() before finalize()");
  grad_.zero();
}

}  // namespace ddpm
