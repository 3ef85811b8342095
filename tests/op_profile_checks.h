// What tests read out of the op profile (engine/op_profile.h): the GPU's ops of a call, and
// what every profile of a U-Net training step holds, on either clock.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/op_profile.h"

namespace ddpm::test {

// The profile taken, and the names of the ops timed on the GPU ("a; b; "): the CPU's (a
// reference computed beside, a cast on the host) left out.
inline std::string gpu_ops_taken() {
  std::string names;
  for (const OpTime& t : op_profile_take())
    if (!t.cpu) names += t.name + "; ";
  return names;
}

// A training step's profile, every range on `cpu`'s clock: each op of the step timed,
// forward and backward apart, the loss, the optimiser's pass and the step summary once,
// every convolution's backward beside its forward, and the ops that name their shapes
// (OpShape) naming one on every call (the linear layers' M x K -> N, the convolutions'
// layers, forward and backward). Returns the times by name.
inline std::map<std::string, OpTime> expect_every_op_of_a_step(const std::vector<OpTime>& times,
                                                               bool cpu) {
  std::map<std::string, OpTime> by_name;
  for (const OpTime& t : times) {
    EXPECT_GE(t.ms, 0.0) << t.name;
    EXPECT_EQ(t.cpu, cpu) << t.name << (cpu ? ": timed on the GPU in a CPU step"
                                            : ": an op of a GPU step ran on CPU tensors");
    by_name[t.name] = t;
  }
  for (const char* name : {"conv2d", "conv2d backward", "group_norm_silu_dropout",
                           "group_norm_silu_dropout backward", "attention", "attention backward",
                           "linear", "linear backward", "diffusion_corrupt",
                           "diffusion_loss_fused", "AdamW + EMA", "step summary (norm, gate)"})
    EXPECT_EQ(by_name.count(name), 1u) << name;
  EXPECT_EQ(by_name["diffusion_loss_fused"].calls, 1);
  EXPECT_EQ(by_name["AdamW + EMA"].calls, 1);
  EXPECT_EQ(by_name["step summary (norm, gate)"].calls, 1);
  EXPECT_GT(by_name["conv2d"].calls, 5);
  EXPECT_EQ(by_name["conv2d backward"].calls, by_name["conv2d"].calls);
  for (const char* name : {"linear", "linear backward", "conv2d", "conv2d backward",
                           "attention", "attention backward", "group_norm_silu_dropout"}) {
    const OpTime& t = by_name[name];
    int64_t calls = 0;
    for (const OpShapeTime& s : t.shapes) calls += s.calls;
    EXPECT_EQ(calls, t.calls) << name;
  }
  return by_name;
}

}  // namespace ddpm::test
