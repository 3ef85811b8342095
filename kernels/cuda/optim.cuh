// CUDA optimiser kernels over the flat parameter buffer; same rules as kernels/cpu/optim.h.
#pragma once

#include <cstdint>

#include "kernels/optim_math.h"
#include "kernels/shapes.h"

namespace ddpm::cuda {

// With `ema`: its update from the new weights in the same pass. With `gate` (device memory,
// written by step_summary earlier on the stream): nothing when gate->applied is 0, else the
// gradient clipped by gate->clip_scale in the same pass, with the gate's bias corrections;
// the host never reads it first. With `inputs` (device memory: a captured step's), p.lr and
// ema_rate are read from there (the CPU kernel has no such argument: only graphs need it).
// With `param_bf16` (n bf16 bits; engine/weight_copy.h), bf16(param) after the update,
// rounded to nearest even, in the same pass (the CPU keeps no copy: its products round
// their operands themselves).
void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v, float ema_rate = 0.0f, float* ema = nullptr,
                const StepGate* gate = nullptr, const StepInputs* inputs = nullptr,
                uint16_t* param_bf16 = nullptr);
void ema_update(int64_t n, float rate, const float* param, float* ema);  // rate: 1 - decay

// Doubles of scratch sum_of_squares needs; the caller allocates it.
constexpr int kSumOfSquaresWorkspace = 512;
// sum of x^2 in double, deterministic (fixed two-stage order); *result is on the device.
void sum_of_squares(int64_t n, const float* x, double* workspace, double* result);

// A step's summary, written by one small kernel (T = float or double):
//   out[0, n)        = per_sample[0, n)     (n may be 0: per_sample unused)
//   out[n, n + 6)    = step_gate(*loss, *sum_of_squares, rule..., *counters)   (a StepGate)
// so the host reads the whole outcome of a step back in one copy, after the update, or a
// step later. *counters (device memory) advances when the step is applied.
template <typename T>
void step_summary(int64_t n, const T* per_sample, const T* loss, const double* sum_of_squares,
                  const StepSummaryRule& rule, StepCounters* counters, double* out);

}  // namespace ddpm::cuda
