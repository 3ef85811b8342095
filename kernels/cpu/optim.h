// CPU reference for the optimiser kernels, each one pass over the flat parameter buffer.
//
// AdamW and the EMA element by element as kernels/optim_math.h writes them; with `ema`, the
// EMA of the updated weights in the same pass (one read of the parameters instead of two).
// With `gate` (host memory): nothing when gate->applied is 0, else the gradient clipped by
// gate->clip_scale inside the same pass, with the gate's bias corrections (not p's). Global norm: sum of squares, accumulated in double
// in a fixed order.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cpu {

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v, float ema_rate = 0.0f, float* ema = nullptr,
                const StepGate* gate = nullptr);
void ema_update(int64_t n, float rate, const float* param, float* ema);  // rate: 1 - decay
double sum_of_squares(int64_t n, const float* x);

}  // namespace ddpm::cpu
