// All parameters of a model in one flat buffer, and all their gradients in a second flat
// buffer at the same offsets. One AdamW launch, one EMA launch, one global-norm reduction and
// one memset (zero_grad) then cover the whole model, and a checkpoint is one write.
//
// Two phases: while a model is built, add() hands out parameter tensors with no storage yet
// (their shapes are known, their total is not); finalize() allocates both buffers and points
// every parameter and its gradient at its window. Each window starts on a multiple of
// kAlignElems elements so vectorised kernels can load any parameter with aligned accesses;
// the padding between windows stays zero in both buffers.
#pragma once

#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

// How finalize() fills a parameter. Random draws are Philox streams keyed by the model seed
// and the parameter's index, so an initialisation is reproducible and the same on any device.
struct Init {
  enum class Kind { Zeros, Constant, Uniform, Normal };
  Kind kind = Kind::Zeros;
  double value = 0;  // Constant: the value; Uniform: the bound b of U(-b, b); Normal: the std
  static Init zeros() { return {Kind::Zeros, 0}; }
  static Init constant(double v) { return {Kind::Constant, v}; }
  static Init uniform(double bound) { return {Kind::Uniform, bound}; }
  static Init normal(double std) { return {Kind::Normal, std}; }
};

class ParameterStore {
 public:
  static constexpr int64_t kAlignElems = 64;  // 256 bytes of f32

  // A new parameter (requires grad). Names must be unique; storage arrives with finalize().
  Tensor add(const std::string& name, const Shape& shape, Init init = Init::zeros());
  // Allocates both buffers and initialises every parameter from `seed`.
  void finalize(Device device, DType dtype = DType::F32, uint64_t seed = 0);
  bool finalized() const { return data_.defined(); }

  const std::vector<Tensor>& parameters() const { return params_; }
  Tensor find(const std::string& name) const;        // error naming `name` if absent
  int64_t offset(size_t i) const { return offsets_.at(i); }  // in elements
  int64_t count() const;                              // parameters, padding excluded
  Tensor flat_data() const { return data_; }          // (total,) with padding
  Tensor flat_grad() const { return grad_; }          // (total,) with padding
  void zero_grad();                                   // one memset of the flat gradient

 private:
  std::vector<Tensor> params_;
  std::vector<Init> inits_;
  std::vector<int64_t> offsets_;
  Tensor data_, grad_;
};

}  // namespace ddpm
