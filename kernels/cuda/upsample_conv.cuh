// The folded kernels of an upsample + 3x3 convolution computed by output phase, on the GPU
// (kernels/upsample_conv.h has the algebra; the same contracts as kernels/cpu/upsample_conv.h,
// and the same bits: each folded weight is the same fp32 sum in the same order).
#pragma once

#include <cstdint>

#include "kernels/grad_write.h"

namespace ddpm::cuda {

// Four pointers, one per phase p = 2a + b, as a kernel takes them (by value).
template <class T>
struct Phases {
  T* p[4];
};

// w4[p] (2, 2, Cin, Cout) = phase p's folded kernel of w (3, 3, Cin, Cout); cin_cout = Cin * Cout.
void fold_upsample_weights(int64_t cin_cout, const float* w, float* const (&w4)[4]);
// dw (3, 3, Cin, Cout) += (or, with GradWrite::Assign, =) the folded kernels' gradients
// unfolded onto the taps they were summed from.
void unfold_upsample_gradients(int64_t cin_cout, const float* const (&dw4)[4], float* dw,
                               GradWrite dw_write = GradWrite::Accumulate);

}  // namespace ddpm::cuda
