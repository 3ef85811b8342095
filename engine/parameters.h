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

class ParameterStore {
 public:
  static constexpr int64_t kAlignElems = 64;  // 256 bytes of f32

  // A new parameter (requires grad). Names must be unique; storage arrives with finalize().
  Tensor add(const std::string& name, const Shape& shape);
  void finalize(Device device, DType dtype = DType::F32);
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
  std::vector<int64_t> offsets_;
  Tensor data_, grad_;
};

}  // namespace ddpm
