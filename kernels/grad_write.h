// How a backward kernel writes an input's gradient. The tape's rule is that each backward
// rule adds its contribution (a tensor used twice receives both); a rule that makes the
// FIRST contribution to a gradient may instead write it outright, which spares zeroing the
// buffer beforehand and reading the zeros back (engine/autograd.h, grad_target). Kernels
// that take a GradWrite do either; the others only add, into a buffer zeroed for them.
#pragma once

namespace ddpm {

enum class GradWrite { Accumulate, Assign };

}  // namespace ddpm
