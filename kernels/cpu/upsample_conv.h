// CPU reference for the folded kernels of an upsample + 3x3 convolution computed by output
// phase (kernels/upsample_conv.h has the algebra; the four 2x2 convolutions themselves are
// kernels/cpu/conv2d.h's, and the phases' interleaving kernels/cpu/resample.h's).
#pragma once

#include <cstdint>

namespace ddpm::cpu {

// w4[p] (2, 2, Cin, Cout) = phase p's folded kernel of w (3, 3, Cin, Cout), p = 2a + b;
// cin_cout = Cin * Cout.
template <class T>
void fold_upsample_weights(int64_t cin_cout, const T* w, T* const (&w4)[4]);
// dw (3, 3, Cin, Cout) += the gradients dw4[p] (2, 2, Cin, Cout) of the folded kernels,
// unfolded onto the taps they were summed from.
template <class T>
void unfold_upsample_gradients(int64_t cin_cout, const T* const (&dw4)[4], T* dw);

}  // namespace ddpm::cpu
