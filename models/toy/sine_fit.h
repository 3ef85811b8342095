// The engine's smallest end-to-end job: an MLP (linear-SiLU-linear-SiLU-linear) fitted to
// y = sin(3x) on [-1, 1] by plain gradient descent on the flat parameter buffer. It runs
// every layer of the engine (tensors, ops, tape, flat parameters) in a second on a CPU.
#pragma once

#include <cstdint>
#include <functional>

namespace ddpm {

struct SineFitResult {
  double initial_loss = 0;
  double final_loss = 0;
  int64_t parameters = 0;
};

// Calls `report(step, loss)` every `report_every` steps.
SineFitResult fit_sine(int steps, uint64_t seed, int report_every,
                       const std::function<void(int, double)>& report);

}  // namespace ddpm
