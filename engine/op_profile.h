// Where a training step's GPU time goes, op by op, measured by the engine itself with CUDA
// events: Nsight Systems is not on every GPU machine (and Nsight Compute not on all of them),
// CUDA events are.
//
// While profiling is on (set_op_profiling), every CUDA op entry (the kernels of one call of
// conv2d, group_norm, attention, ... and of each backward rule: engine/ops/op_util.h
// dispatch), the optimiser's pass and the step summary record an event before and after
// their kernels (OpTimer). op_profile_take() waits for the GPU once, adds the elapsed times
// up by name, and clears. Off by default: then an OpTimer costs one load of a flag.
//
// What a time means: the GPU's time from reaching the first event to reaching the second,
// so an op's kernels plus any gap between them when the GPU waited for the host to queue
// more (a host-bound stretch shows up as time, which is worth knowing). Ranges of different
// names may nest; each name's time includes what ran inside it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

struct OpTime {
  std::string name;
  int64_t calls = 0;
  double ms = 0;  // summed over the calls
};

void set_op_profiling(bool on);
bool op_profiling();

// Times the CUDA work queued during its lifetime under `name` when profiling is on and the
// work is on the GPU (`on_gpu`); nothing otherwise.
class OpTimer {
 public:
  OpTimer(const char* name, bool on_gpu);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int record_ = -1;  // index of this range's record, -1: not timed
};

// The times recorded since the last take, by name, most time first; waits for the GPU.
std::vector<OpTime> op_profile_take();
// A table of `times` averaged over `steps`: name, calls per step, ms per step and share of
// the sum, then the sum.
std::string format_op_profile(const std::vector<OpTime>& times, int64_t steps);

}  // namespace ddpm
