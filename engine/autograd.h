// The autograd tape.
//
// While recording is on, every op whose inputs include a tensor that requires grad appends a
// Node: the op's name, the grad slots of its outputs, and a backward function (a closure that
// captured whatever the op saved). backward(loss) seeds d(loss)/d(loss) = 1 and walks the tape
// in reverse. Each backward function reads the gradients of its op's outputs and ACCUMULATES
// (+=) into the gradients of its inputs, so a tensor used twice receives the sum of both
// contributions. The first contribution to a gradient need not find zeros to add to: a rule
// may write it outright (grad_target) or hand over a tensor it no longer needs
// (engine/ops/op_util.h, add_to_grad), which spares each gradient a zero fill and a read of
// the zeros (about 45 MB per image in the CIFAR-10 U-Net's step, in fp32: see
// docs/training-step.md). As the walk passes a node it drops the closure (freeing the saved
// tensors) and the outputs' gradients (only leaves keep theirs). A node recorded without a
// backward rule fails with the op's name when a gradient reaches it. Inside a NoGradGuard
// nothing is recorded (sampling, EMA evaluation).
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/grad_write.h"

namespace ddpm {

// grad_outputs[i] is d(loss)/d(outputs[i]) (zeros if nothing reached that output).
using BackwardFn = std::function<void(const std::vector<Tensor>& grad_outputs)>;
using GradRef = std::shared_ptr<GradSlot>;

class Tape {
 public:
  struct Node {
    std::string op;
    std::vector<GradRef> outputs;
    BackwardFn backward;  // empty: the op has no backward rule
  };

  bool enabled() const { return enabled_; }
  void set_enabled(bool on) { enabled_ = on; }
  size_t size() const { return nodes_.size(); }
  void clear() { nodes_.clear(); }

  // Gives each output a fresh (non-leaf) grad slot and appends the node.
  void record(const std::string& op, const std::vector<Tensor>& outputs, BackwardFn backward);

  // Reverse walk from `root`, seeded with `seed` (default: ones, for a one-element root).
  // Clears the tape. With SeedUse::Adopt the seed's storage becomes root's gradient buffer
  // (no copy; backward kernels may then accumulate into it): how a fused loss hands over
  // the d(loss)/d(pred) it wrote in its forward pass without another pass over it.
  enum class SeedUse { Copy, Adopt };
  void backward(const Tensor& root, const Tensor& seed = Tensor(), SeedUse use = SeedUse::Copy);

 private:
  bool enabled_ = true;
  std::vector<Node> nodes_;
};

// The tape of this thread.
Tape& tape();

// True when the tape is on and one of `inputs` requires grad: the op must record itself.
bool should_record(std::initializer_list<Tensor> inputs);

// The grad slot of x if x requires grad, else null. Backward rules capture these.
GradRef grad_ref(const Tensor& x);

// The gradient buffer of a slot, allocated as zeros on first use: backward kernels
// accumulate into it.
Tensor grad_buffer(const GradRef& slot);

// Where a rule writes its contribution to a gradient whose kernel can either add it or
// write it outright (kernels/grad_write.h): the buffer, and Assign when this is the first
// contribution (the buffer is then allocated and left uninitialised: the kernel must write
// every element) or Accumulate. Undefined for a null slot. Ask for it right before the
// kernel that writes it: a later request for the same slot says Accumulate.
struct GradTarget {
  Tensor buffer;
  GradWrite write = GradWrite::Accumulate;
  // For the kernels that can only add: the buffer, zero-filled first if it is new.
  Tensor for_accumulating() const;
};
GradTarget grad_target(const GradRef& slot);

// d(root)/d(every leaf that requires grad), accumulated into their grads.
inline void backward(const Tensor& root) { tape().backward(root); }

// Turns recording off for its lifetime.
class NoGradGuard {
 public:
  NoGradGuard() : previous_(tape().enabled()) { tape().set_enabled(false); }
  ~NoGradGuard() { tape().set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace ddpm
