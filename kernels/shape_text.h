// The kernels' shapes (kernels/shapes.h) as text, the way logs and the op profile print them
// (engine/op_profile.h's OpShape): one wording wherever a layer is named. Host only.
#pragma once

#include <string>

#include "kernels/shapes.h"

namespace ddpm {

// "(N, H, W, Cin) kKHxKW -> Cout stride S": the input, the kernel and what it makes.
inline std::string conv_shape_text(const Conv2dShape& s) {
  return "(" + std::to_string(s.n) + ", " + std::to_string(s.h) + ", " + std::to_string(s.w) +
         ", " + std::to_string(s.c_in) + ") k" + std::to_string(s.kh) + "x" +
         std::to_string(s.kw) + " -> " + std::to_string(s.c_out) + " stride " +
         std::to_string(s.stride);
}

// "M x K -> N": rows, their length in and out.
inline std::string linear_shape_text(const LinearShape& s) {
  return std::to_string(s.m) + " x " + std::to_string(s.k) + " -> " + std::to_string(s.n);
}

// "B x L, C channels, H heads"
inline std::string attention_shape_text(const AttentionShape& s) {
  return std::to_string(s.b) + " x " + std::to_string(s.l) + ", " + std::to_string(s.c) +
         " channels, " + std::to_string(s.heads) + (s.heads == 1 ? " head" : " heads");
}

// "(N, H*W, C), G groups"
inline std::string group_norm_shape_text(const GroupNormShape& s) {
  return "(" + std::to_string(s.n) + ", " + std::to_string(s.s) + ", " + std::to_string(s.c) +
         "), " + std::to_string(s.groups) + " groups";
}

}  // namespace ddpm
