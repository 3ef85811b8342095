// Where a training step's time goes, op by op, measured by the engine itself: on the GPU
// with CUDA events (Nsight Systems is not on every GPU machine, and Nsight Compute not on all
// of them; CUDA events are), on the CPU with the host's steady clock.
//
// While profiling is on (set_op_profiling), every op entry (the kernels of one call of
// conv2d, group_norm, attention, ... and of each backward rule: engine/ops/op_util.h
// dispatch), the optimiser's pass and the step summary open a range around their work
// (OpTimer). op_profile_take() waits for the GPU once, adds the times up by name, and clears.
// Off by default: then an OpTimer costs one load of a flag.
//
// What a time means.
// - On the GPU: the GPU's time from reaching the first event to reaching the second, so an
//   op's kernels plus any gap between them when the GPU waited for the host to queue more (a
//   host-bound stretch shows up as time, which is worth knowing). Ranges of different names
//   may nest; each name's time includes what ran inside it.
// - On the CPU (an op on CPU tensors): the wall-clock time of the call, less the time of the
//   ranges opened inside it on the same thread (an op entry that calls another op, such as a
//   CPU bf16 op on widened copies and its casts), so that every millisecond is counted under
//   one name and the table's sum is the time the ops took. The CPU's ops run to completion
//   before they return, so the time is the work's own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

// An op's time on calls of one shape (OpShape below).
struct OpShapeTime {
  std::string shape;
  int64_t calls = 0;
  double ms = 0;
};

struct OpTime {
  std::string name;
  int64_t calls = 0;
  double ms = 0;  // summed over the calls
  // The same by the calls' shapes, most time first, where the op names them (OpShape);
  // calls that name none are not listed here.
  std::vector<OpShapeTime> shapes;
  bool cpu = false;  // timed on the CPU's clock (an op on CPU tensors), not with CUDA events
};

void set_op_profiling(bool on);
bool op_profiling();

// The shape the ranges opened on this thread during its lifetime record beside their names:
// an op entry names its call's shape once (a linear's M x K -> N, a convolution's layer) and
// every range its kernels open records it, so the profile can say which of a model's many
// calls of one op take the time. describe() runs only while profiling is on (a string costs
// host time). Scopes nest; the innermost one applies.
class OpShape {
 public:
  template <class Describe>
  explicit OpShape(Describe&& describe) {
    if (op_profiling()) enter(describe());
  }
  ~OpShape();
  OpShape(const OpShape&) = delete;
  OpShape& operator=(const OpShape&) = delete;

 private:
  void enter(std::string shape);
  bool active_ = false;
  std::string outer_;
};

// Times the work done during its lifetime under `name` when profiling is on: the CUDA work
// queued (`on_gpu`), or the CPU's (its wall clock, less the ranges nested in it); nothing
// when profiling is off.
class OpTimer {
 public:
  OpTimer(const char* name, bool on_gpu);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int record_ = -1;    // index of this range's GPU record, -1: none
  bool cpu_ = false;   // a CPU range is open on this thread's stack
  std::string name_;   // a CPU range's name (kept: the caller's may be a temporary's)
};

// The CPU ranges' clock, in ms: the host's steady clock, or (tests) `now_ms` until it is
// set back to nullptr. A test's clock makes the CPU's times exact numbers.
void set_op_profile_cpu_clock(double (*now_ms)());

// The times recorded since the last take, by name (and within each by shape), most time
// first; waits for the GPU. A name timed on both the GPU and the CPU gives two entries.
std::vector<OpTime> op_profile_take();
// A table of `times` averaged over `steps`: name, calls per step, ms per step and share of
// the sum, then the sum (its header says which clock: GPU or CPU; in a table of both, the
// CPU's names carry " (CPU)"); then, where ops named their shapes, the `top_shapes` costliest
// (op, shape) pairs with their share of the sum and of their op's time.
std::string format_op_profile(const std::vector<OpTime>& times, int64_t steps,
                              int top_shapes = 24);

}  // namespace ddpm
