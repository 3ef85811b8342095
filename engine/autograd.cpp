#include "engine/autograd.h"

namespace ddpm {

Tape& tape() {
  thread_local Tape t;
  return t;
}

bool should_record(std::initializer_list<Tensor> inputs) {
  if (!tape().enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

GradRef grad_ref(const Tensor& x) {
  return x.defined() ? x.impl().grad_slot : nullptr;
}

Tensor grad_buffer(const GradRef& slot) {
  CHECK(slot != nullptr, "grad_buffer of a tensor that does not require grad");
  if (!slot->grad) slot->grad = Tensor::zeros(slot->shape, slot->dtype, slot->device).impl_ptr();
  return Tensor(slot->grad);
}

Tensor GradTarget::for_accumulating() const {
  if (write == GradWrite::Assign) buffer.zero();
  return buffer;
}

GradTarget grad_target(const GradRef& slot) {
  if (!slot) return {};
  if (slot->grad) return {Tensor(slot->grad), GradWrite::Accumulate};
  slot->grad = Tensor::empty(slot->shape, slot->dtype, slot->device).impl_ptr();
  return {Tensor(slot->grad), GradWrite::Assign};
}

void Tape::record(const std::string& op, const std::vector<Tensor>& outputs,
                  BackwardFn backward) {
  Node node;
  node.op = op;
  node.backward = std::move(backward);
  for (const Tensor& out : outputs) {
    TensorImpl& impl = out.impl();
    CHECK(!impl.grad_slot || !impl.grad_slot->is_leaf,
          "op '" << op << "' writes into a leaf tensor that requires grad");
    impl.grad_slot = std::make_shared<GradSlot>();
    impl.grad_slot->shape = impl.shape;
    impl.grad_slot->dtype = impl.dtype;
    impl.grad_slot->device = impl.device;
    impl.grad_slot->is_leaf = false;
    node.outputs.push_back(impl.grad_slot);
  }
  nodes_.push_back(std::move(node));
}

void Tape::backward(const Tensor& root, const Tensor& seed, SeedUse use) {
  CHECK(root.requires_grad(),
        "backward: the root " << root.describe() << " does not require grad (was it computed "
                                 "inside a NoGradGuard, or from inputs that need no gradient?)");
  GradRef root_slot = grad_ref(root);
  if (seed.defined()) {
    CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype(),
          "backward: seed " << seed.describe() << " does not match root " << root.describe());
    CHECK(seed.device() == root.device(),
          "backward: seed " << seed.describe() << " is not on root's device " << root.describe());
    root_slot->grad = (use == SeedUse::Adopt ? seed : seed.clone()).impl_ptr();
  } else {
    CHECK(root.numel() == 1, "backward: a root with " << root.numel()
                                                      << " elements needs an explicit seed");
    root_slot->grad = Tensor::full(root.shape(), 1.0, root.dtype(), root.device()).impl_ptr();
  }

  // Leave the tape empty whatever happens below, so a failed backward cannot be re-walked.
  std::vector<Node> nodes;
  nodes.swap(nodes_);
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node& node = *it;
    bool reached = false;
    for (const GradRef& out : node.outputs) reached = reached || out->grad != nullptr;
    if (reached) {
      CHECK(node.backward, "autograd: op '" << node.op
                                            << "' has no backward rule, but a gradient "
                                               "flows through it");
      std::vector<Tensor> grad_outputs;
      for (const GradRef& out : node.outputs)
        grad_outputs.push_back(out->grad ? Tensor(out->grad) : grad_buffer(out));
      node.backward(grad_outputs);
    }
    node.backward = nullptr;  // frees the tensors the rule saved
    for (const GradRef& out : node.outputs) out->grad.reset();
  }
}

}  // namespace ddpm
