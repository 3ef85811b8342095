// The training step as one CUDA graph (engine/cuda_graph.h): captured after
// DiffusionTrainer::kEagerStepsBeforeCapture eager steps, then replayed by one launch a step.
//
// A graph replays the step's ~500 kernels with the arguments they were captured with, so
// whatever changes from step to step reaches them through buffers at fixed addresses,
// written before each launch and outside the graph:
//   x0                  the step's batch, copied device to device (the batcher's upload
//                       lands wherever the allocator puts it)
//   t                   (N) i32 for the loss, (N) f32 for the model: staged uploads
//   importance          (N) weights, with importance sampling: a staged upload
//   StepInputs          the step index, the flip counter, lr, the EMA decay: the trainer's
//                       (kernels/step_inputs.h), from which every per-step key is read
// and the graph writes the step's summary (per-sample losses and the gate) into one fixed
// tensor, which the host copies back after each launch. So a replay reads and writes
// exactly what the eager step would, and the bits are the same (CudaModel tests).
// A replay needs a batch like the captured one: the same shape, dtype and flip rule (flip
// on or off, its seed and stream); anything else is an error naming what differs.
#pragma once

#include <cstdint>
#include <functional>

#include "engine/cuda_graph.h"
#include "engine/tensor.h"
#include "models/ddpm/trainer.h"

namespace ddpm {

class CapturedStep {
 public:
  // Fixed buffers for batches like `like`; importance: whether weights are uploaded too.
  CapturedStep(const TrainBatch& like, bool importance);

  // Copies this step's batch and timesteps into the fixed buffers (after checking that
  // the batch fits them), on the engine's stream, ahead of the launch.
  void stage(const TrainBatch& batch, const TimestepBatch& tb);
  // What the captured work reads: the fixed x0 with the captured flip rule (its flip
  // counter is the first captured step's; each replay's is read from StepInputs), t (i32),
  // t_model (f32), importance (or undefined).
  const TrainBatch& batch() const { return batch_; }
  const Tensor& t() const { return t_; }
  const Tensor& t_model() const { return t_model_; }
  const Tensor& importance() const { return importance_; }

  // Captures `work` (the step's device work; it returns the step's summary). Once.
  void capture(const std::function<Tensor()>& work);
  bool captured() const { return graph_.captured(); }
  void launch() { graph_.launch(); }
  const Tensor& summary() const { return summary_; }  // where each launch writes its summary

  uint64_t kernels() const { return graph_.kernels(); }      // per launch
  size_t pool_bytes() const { return graph_.pool_bytes(); }  // memory reserved for the graph

 private:
  TrainBatch batch_;
  Tensor t_, t_model_, importance_, summary_;
  CudaGraph graph_;
};

}  // namespace ddpm
