#include "engine/parameters.h"

#include "engine/ops.h"

namespace ddpm {

namespace {

// Philox stream of parameter i's initial values: a range no other use of the seed touches.
constexpr uint64_t kInitStreamBase = 0x1417000000000000ull;

void initialise(const Tensor& p, const Init& init, uint64_t seed, size_t index) {
  NoGradGuard no_grad;
  Tensor values;
  switch (init.kind) {
    case Init::Kind::Zeros: return;  // the buffer is already zero
    case Init::Kind::Constant:
      values = Tensor::full(p.shape(), init.value, DType::F32);
      break;
    case Init::Kind::Uniform:  // U(-b, b) = b (2u - 1)
      values = scale(add(scale(rand_uniform(p.shape(), seed, kInitStreamBase + index), 2.0),
                         Tensor::full(p.shape(), -1.0)),
                     init.value);
      break;
    case Init::Kind::Normal:
      values = scale(randn(p.shape(), seed, kInitStreamBase + index), init.value);
      break;
  }
  Tensor converted = values.to(p.dtype());
  p.copy_from(converted);
}

}  // namespace

Tensor ParameterStore::add(const std::string& name, const Shape& shape, Init init) {
  CHECK(!finalized(), "ParameterStore::add('" << name << "') after finalize()");
  for (const Tensor& p : params_)
    CHECK(p.name() != name, "parameter name '" << name << "' is used twice");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->name = name;
  impl->is_parameter = true;
  Tensor t(impl);
  params_.push_back(t);
  inits_.push_back(init);
  return t;
}

void ParameterStore::finalize(Device device, DType dtype, uint64_t seed) {
  CHECK(!finalized(), "ParameterStore::finalize() called twice");
  int64_t total = 0;
  for (const Tensor& p : params_) {
    offsets_.push_back(total);
    total += (p.numel() + kAlignElems - 1) / kAlignElems * kAlignElems;
  }
  data_ = Tensor::zeros(Shape{total}, dtype, device);
  grad_ = Tensor::zeros(Shape{total}, dtype, device);
  for (size_t i = 0; i < params_.size(); ++i) {
    TensorImpl& p = params_[i].impl();
    const Tensor data_window = data_.window(offsets_[i], p.shape);
    p.storage = data_window.impl().storage;
    p.offset = data_window.impl().offset;
    p.dtype = dtype;
    p.device = device;
    params_[i].set_requires_grad(true);
    p.grad_slot->grad = grad_.window(offsets_[i], p.shape).impl_ptr();
    initialise(params_[i], inits_[i], seed, i);
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
