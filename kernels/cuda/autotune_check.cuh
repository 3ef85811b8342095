// The autotuners' guard: a candidate is timed, and may be chosen, only if what it computed
// is what the reference computed on the same operands. The reference is the first candidate
// of each list, the longest-verified kernel (v2, v4 or cuDNN, the mma.sync flash pair, v4's
// 128x128 tile, v5's first schedule: each of them passed its tests on a GPU); the others include
// kernels no GPU has run yet, whose tests rest on the CPU emulation's reading of the PTX
// ISA. Without the guard, a new kernel that is fast because it is wrong (a fragment laid out
// the wrong way, a tile never stored) would be the one kept, and a training run would go on
// with it. Internal to kernels/cuda.
//
// How: before a candidate's first run its outputs are filled with NaN bytes (0xFF: a NaN in
// fp32 and in bf16), so an element it never writes shows; the reference's outputs are then
// copied aside, and each later candidate's compared with them, element by element, on the
// GPU (autotune_check.cu: a max over the elements, one atomic a warp). That first run is
// also the candidate's warm-up; then it is timed. Declarations only, so that the tests can
// hold the chooser to its word with candidates of their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace ddpm::cuda::autotune {

// How an output's elements are read and held to the reference's:
//   F32, Bf16: as values (fp32, or bf16 bits); the error is max |got - want| relative to the
//              reference's largest |want|, which the chooser bounds;
//   Bits:      as 32-bit words; any word that differs is an infinite error (the block-shape
//              autotuners, whose choices give the same bits by design: conv2d_bf16.cu).
// A non-finite element on either side is an infinite error.
enum class Compare { F32, Bf16, Bits };

// Up to this many column groups an output's error is taken over separately (below).
constexpr int kMaxGroups = 3;

// One output a candidate writes: n elements at p. With groups > 1 each row of `row`
// elements is cut into that many equal column ranges, each held to its own largest value:
// attention's dqkv, whose dq, dk and dv thirds differ in scale by an order of magnitude (an
// error in dq alone would hide under dv's largest value).
struct Output {
  void* p = nullptr;
  int64_t n = 0;
  Compare compare = Compare::F32;
  int64_t row = 1;
  int groups = 1;
};

// The outputs of the candidates (the same buffers for each), and a copy of the reference's.
class Check {
 public:
  explicit Check(std::vector<Output> outputs);  // each with room for a copy
  ~Check();
  Check(const Check&) = delete;
  Check& operator=(const Check&) = delete;

  // Every output filled with NaN bytes: what a candidate's run leaves unwritten stays NaN.
  void poison() const;
  // The outputs as they are now become the reference.
  void keep_as_reference() const;
  // The largest error of the outputs as they are now against the reference: over every
  // output and column group, max |got - want| / max |want| (0 where both are 0 everywhere),
  // or infinity (a non-finite element, a word that differs under Compare::Bits). Waits for
  // the GPU.
  double error() const;

 private:
  std::vector<Output> outputs_;
  std::vector<void*> reference_;
  unsigned* maxima_ = nullptr;  // per group: max difference, max |reference| (float bits)
};

// What the chooser found of one candidate: its median time, or left out (not timed) where
// its error against the reference (Check::error) was above the bound.
struct Timing {
  double ms = 0.0;
  double error = 0.0;
  bool kept = false;
};

// The bound on Check::error for candidates that compute the same sums in another order or
// on other pieces (v4 against cuDNN, the flash pair against cuBLAS's GEMMs): their outputs
// differ by the roundings of bf16 storage (2^-9 of a value) and of fp32 sums, well under
// 2^-5 of the output's largest value; a kernel that is wrong (a tile unwritten, a fragment
// misplaced, a term missing) is off by a sizeable fraction of its values. The block-shape
// autotuners compare bits instead (Compare::Bits, bound 0).
constexpr double kSameSumsBound = 1.0 / 32;

// Each of `count` candidates (run(i) runs candidate i on the operands, into the outputs of
// `check`, on the engine's stream), checked, then timed: its first run goes into poisoned
// outputs and is checked against the reference (candidate 0's first run, which becomes
// it); it is also its warm-up (a GPU's first launch of a kernel loads it; a library builds
// its plan). A candidate whose error is above `bound` is left out; the others are timed,
// the median of kAutotuneTimedRuns runs between CUDA events on the engine's stream (on the
// CPU emulation, with no warm-up, the checked run is the one timed). A reference whose own
// output is not finite leaves nothing to check against: it alone is kept, untimed.
std::vector<Timing> check_and_time(size_t count, const Check& check, double bound,
                                   const std::function<void(size_t)>& run);

// The fastest candidate kept (the reference when it is the only one), after printing each:
// ", "-separated, "NAME 0.123 ms" for one timed (with "(off by E of the largest)" after it
// where its output differs from the reference's within the bound), "NAME left out (error E
// of the largest value, bound B)" or "NAME left out (its output is not finite, or not the
// reference's bits)" for one that disagreed, then `note`, " -> NAME" and a newline.
size_t print_and_pick(const std::vector<const char*>& names, const std::vector<Timing>& timings,
                      double bound, const char* note = "");

}  // namespace ddpm::cuda::autotune
