// The folded kernels of an upsample-conv (kernels/upsample_conv.h): w (3, 3, Cin, Cout) ->
// four (2, 2, Cin, Cout), and their gradients back. A thread per output element, which sums
// its (at most four) terms in kernels/upsample_conv.h's order. Small: 16 Cin Cout elements a
// call (1M for the U-Net's 256-channel layers), once per step; memory-bound.
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/upsample_conv.cuh"
#include "kernels/upsample_conv.h"

namespace ddpm::cuda {

namespace {

// element i = (p * 4 + th * 2 + tw) * cin_cout + e of the four kernels taken as one array
__global__ void fold_kernel(int64_t cin_cout, const float* w, Phases<float> w4) {
  DDPM_GRID_STRIDE(i, 16 * cin_cout) {
    const int64_t e = i % cin_cout;
    const int tap = static_cast<int>(i / cin_cout), p = tap / 4, th = tap / 2 % 2, tw = tap % 2;
    w4.p[p][(th * 2 + tw) * cin_cout + e] = folded_weight(w, cin_cout, p / 2, p % 2, th, tw, e);
  }
}

__global__ void unfold_kernel(int64_t cin_cout, Phases<const float> dw4, float* dw, bool add) {
  DDPM_GRID_STRIDE(i, 9 * cin_cout) {
    const int64_t e = i % cin_cout;
    const int tap = static_cast<int>(i / cin_cout);
    const float g = unfolded_gradient(dw4.p, cin_cout, tap / 3, tap % 3, e);
    dw[i] = add ? dw[i] + g : g;
  }
}

}  // namespace

void fold_upsample_weights(int64_t cin_cout, const float* w, float* const (&w4)[4]) {
  if (cin_cout == 0) return;
  DDPM_LAUNCH(fold_kernel, grid_for(16 * cin_cout), kThreads)(
      cin_cout, w, Phases<float>{{w4[0], w4[1], w4[2], w4[3]}});
}

void unfold_upsample_gradients(int64_t cin_cout, const float* const (&dw4)[4], float* dw,
                               GradWrite dw_write) {
  if (cin_cout == 0) return;
  DDPM_LAUNCH(unfold_kernel, grid_for(9 * cin_cout), kThreads)(
      cin_cout, Phases<const float>{{dw4[0], dw4[1], dw4[2], dw4[3]}}, dw,
      dw_write == GradWrite::Accumulate);
}

}  // namespace ddpm::cuda
