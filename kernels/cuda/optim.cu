// The optimiser on the GPU: one launch per update over the whole flat parameter buffer
// (DESIGN.md: parameters in one flat buffer), one thread per parameter in a grid-stride
// loop. AdamW reads p, g, m, v and writes p, m, v: 28 bytes per parameter, memory-bound.
// The global gradient norm is a sum of squares accumulated in double with the same
// fixed-order two-stage tree as kernels/cuda/reduce.cu, so clipping is deterministic.
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/storage.cuh"  // bf16_round
#include "kernels/bf16.h"
#include "kernels/optim_math.h"

namespace ddpm::cuda {

namespace {

// One thread per element (grid-stride): AdamW, then the EMA when ema is given, and the bf16
// copy of the new weight when param_bf16 is (2 more bytes written per parameter, against
// the 4 + 2 per weight tensor and pass that converting at each product costs). With a gate,
// every thread reads the same 48 bytes (one broadcast load per warp, cached); the same for
// the 16 bytes of step inputs. A refused step writes nothing: the copy stays bf16(param).
__global__ void adamw_kernel(int64_t n, AdamWParams p, float* param, const float* grad, float* m,
                             float* v, float ema_rate, float* ema, const StepGate* gate,
                             const StepInputs* inputs, uint16_t* param_bf16) {
  if (gate && gate->applied == 0) return;
  const float scale = gate ? static_cast<float>(gate->clip_scale) : 1.0f;
  AdamWParams q = gated_params(p, gate);
  if (inputs) {  // the same floats the host would have passed
    q.lr = inputs->lr;
    ema_rate = inputs->ema_rate;
  }
  const AdamWStepConstants k = adamw_step_constants(q);
  DDPM_GRID_STRIDE(i, n) {
    float mi = m[i], vi = v[i], pi = param[i];
    adamw_element(q, k, grad[i] * scale, mi, vi, pi);
    m[i] = mi;
    v[i] = vi;
    param[i] = pi;
    if (param_bf16) param_bf16[i] = bf16_round(pi);
    if (ema) ema[i] = ema_element(ema_rate, ema[i], pi);
  }
}

__global__ void ema_kernel(int64_t n, float rate, const float* param, float* ema) {
  DDPM_GRID_STRIDE(i, n) ema[i] = ema_element(rate, ema[i], param[i]);
}

__device__ double block_sum_double(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void sum_squares_partial_kernel(int64_t n, const float* x, double* partials) {
  __shared__ double scratch[32];
  double acc = 0;
  DDPM_GRID_STRIDE(i, n)
    acc += static_cast<double>(x[i]) * x[i];
  acc = block_sum_double(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_partials_kernel(int count, const double* partials, double* result) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum_double(acc, scratch);
  if (threadIdx.x == 0) *result = acc;
}

// One block: the per-sample losses copied, then thread 0 writes the gate after them and
// advances the counters (one thread: the only writer, and the next step's gate, later on
// the stream, reads what it wrote).
template <typename T>
__global__ void step_summary_kernel(int64_t n, const T* per_sample, const T* loss,
                                    const double* sum_of_squares, StepSummaryRule rule,
                                    StepCounters* counters, double* out) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = static_cast<double>(per_sample[i]);
  if (threadIdx.x == 0) {
    StepCounters c = *counters;
    store_step_gate(step_gate(static_cast<double>(*loss), *sum_of_squares, rule, c), out + n);
    *counters = c;
  }
}

}  // namespace

void adamw_step(int64_t n, const AdamWParams& p, float* param, const float* grad, float* m,
                float* v, float ema_rate, float* ema, const StepGate* gate,
                const StepInputs* inputs, uint16_t* param_bf16) {
  if (n == 0) return;
  DDPM_LAUNCH(adamw_kernel, grid_for(n), kThreads)(n, p, param, grad, m, v, ema_rate, ema, gate,
                                                   inputs, param_bf16);
}

template <typename T>
void step_summary(int64_t n, const T* per_sample, const T* loss, const double* sum_of_squares,
                  const StepSummaryRule& rule, StepCounters* counters, double* out) {
  // One block of 256 threads: n is a batch (at most a few thousand), a single pass.
  DDPM_LAUNCH((step_summary_kernel<T>), 1, kThreads)(n, per_sample, loss, sum_of_squares, rule,
                                                    counters, out);
}
template void step_summary<float>(int64_t, const float*, const float*, const double*,
                                  const StepSummaryRule&, StepCounters*, double*);
template void step_summary<double>(int64_t, const double*, const double*, const double*,
                                   const StepSummaryRule&, StepCounters*, double*);

void ema_update(int64_t n, float rate, const float* param, float* ema) {
  if (n == 0) return;
  DDPM_LAUNCH(ema_kernel, grid_for(n), kThreads)(n, rate, param, ema);
}

void sum_of_squares(int64_t n, const float* x, double* workspace, double* result) {
  // As reduce.cu's sums: a block per 256 values up to the workspace's partials.
  const unsigned blocks = grid_for(n, kSumOfSquaresWorkspace);
  DDPM_LAUNCH(sum_squares_partial_kernel, blocks, kThreads)(n, x, workspace);
  DDPM_LAUNCH(sum_partials_kernel, 1, kThreads)(static_cast<int>(blocks), workspace, result);
}

}  // namespace ddpm::cuda
