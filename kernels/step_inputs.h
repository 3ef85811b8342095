// What changes from one training step to the next, for kernels that a CUDA graph replays.
//
// A captured step (engine/cuda_graph.h) replays its kernels with the arguments they had when
// it was captured. So a value that differs per step cannot be a kernel argument: it is read
// from device memory that the host rewrites before each replay. The training step keeps one
// such block, StepInputs (the step index, the batch's flip counter, the learning rate, the
// EMA's rate), and every per-step Philox key is an affine function of a value read there:
//   noise stream    kNoiseStream (+ shard << 32) + 1 * step
//   flip counter    0 + 1 * flip_first
//   dropout stream  kDropoutStream + layer (+ shard << 42) + 4096 * step
// A StepKey holds the fixed part and the stride; with no pointer (eager ops, tests, the
// CPU) it is just the number, so ops called with plain values behave as before.
// Both ways give the same 64-bit value, wrapping the same way, so a replayed step draws the
// same bits as the step run eagerly.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/host_device.h"

namespace ddpm {

struct StepInputs {
  uint64_t step = 0;            // the training step being taken
  uint64_t flip_first = 0;      // the batch's flip counter (the batcher's: step * batch)
  float lr = 0, ema_rate = 0;  // AdamW's learning rate and the EMA's rate (1 - decay) at that step
};
constexpr int kStepInputDoubles = 3;  // uploaded as 3 f64 slots
static_assert(sizeof(StepInputs) == kStepInputDoubles * 8, "StepInputs is 24 bytes");

// Where a StepInputs' fields lie in device memory (address arithmetic, no host read).
inline const uint64_t* step_field(const StepInputs* on_device) {
  return reinterpret_cast<const uint64_t*>(reinterpret_cast<const char*>(on_device) +
                                           offsetof(StepInputs, step));
}
inline const uint64_t* flip_first_field(const StepInputs* on_device) {
  return reinterpret_cast<const uint64_t*>(reinterpret_cast<const char*>(on_device) +
                                           offsetof(StepInputs, flip_first));
}

struct StepKey {
  uint64_t base = 0, stride = 0;
  const uint64_t* at = nullptr;  // a StepInputs field in device memory, or null

  StepKey() = default;
  DDPM_HD StepKey(uint64_t value) : base(value) {}  // NOLINT: a plain key converts implicitly
  StepKey(uint64_t fixed, uint64_t per_unit, const uint64_t* on_device)
      : base(fixed), stride(per_unit), at(on_device) {}

  DDPM_HD bool live() const { return at != nullptr; }
  // base + stride * (*at): read on the device for a live key (call it in a kernel).
  DDPM_HD uint64_t value() const { return at ? base + stride * *at : base; }
};

}  // namespace ddpm
