// The per-shape choice among our convolutions and cuDNN's (conv2d_autotune.cuh).
//
// The operands are scratch buffers of the shape, filled with a fixed pattern of values in
// [-0.5, 0.5) (no zeros-only or denormal inputs a kernel might run faster on), in the
// storage the caller's call has (ConvOperands: fp32 or bf16 activations, and a bf16 copy of
// the weights or none), through the same entry points; the outputs are scratch too, so
// timing a backward pass touches no gradient. Each candidate's first run (its warm-up:
// cuDNN's plan, v4's tile choice) is checked against the first candidate's
// (autotune_check.cuh: within kSameSumsBound of its largest value), then 5 timed runs
// between CUDA events (kAutotuneTimedRuns), of which the median counts. The key is the
// whole shape, the pass, the operands and the candidates: batch size included, since a
// tile shape that wins at batch 128 may lose at batch 8.
#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/autotune_scratch.cuh"
#include "kernels/cuda/conv2d_autotune.cuh"

namespace ddpm::cuda {

namespace {

using autotune::Scratch;

const char* pass_name(ConvPass pass) {
  return pass == ConvPass::Forward ? "forward" : pass == ConvPass::Dgrad ? "dgrad" : "wgrad";
}

// Runs `pass` of s with algo a on scratch operands of storage A (float, or bf16 bits); a
// backward pass writes its output outright (GradWrite::Assign), as a step's first
// contribution to a gradient is, so that each run's output is the pass's alone.
template <class A>
void run_pass(const Conv2dShape& s, ConvPass pass, ConvAlgo a, const A* x, const float* w,
              const A* dy, A* y, A* dx, float* dw, float* ws, const uint16_t* w_bf16) {
  if (pass == ConvPass::Forward)
    conv2d_forward(s, x, w, nullptr, y, a, ws, nullptr, nullptr, w_bf16);
  else if (pass == ConvPass::Dgrad)
    conv2d_backward(s, x, w, dy, dx, nullptr, nullptr, a, ws, w_bf16, GradWrite::Assign);
  else
    conv2d_backward(s, x, w, dy, nullptr, dw, nullptr, a, ws, w_bf16, GradWrite::Assign,
                    GradWrite::Assign);
}

ConvAlgo tune(const Conv2dShape& s, ConvPass pass, ConvOperands operands,
              const std::vector<ConvAlgo>& offered) {
  CHECK(!autotune::capturing(),
        "cuda_conv: auto met a new convolution shape inside a CUDA graph capture ("
            << pass_name(pass) << " of (" << s.n << ", " << s.h << ", " << s.w << ", " << s.c_in
            << ") -> " << s.c_out << "): the eager steps before a capture must see every shape");
  std::vector<ConvAlgo> candidates;
  for (ConvAlgo a : offered)
    if (conv2d_algo_runs(s, a)) candidates.push_back(a);
  const int64_t nx = s.n * s.h * s.w * s.c_in, nw = s.taps() * s.c_in * s.c_out;
  const int64_t ny = s.n * s.out_h() * s.out_w() * s.c_out;
  int64_t ws_floats = 0;
  for (ConvAlgo a : candidates)
    ws_floats = std::max({ws_floats, conv2d_forward_workspace(s, a),
                          conv2d_backward_workspace(s, a)});
  const Scratch x(nx), w(nw), y(ny), dx(nx), dw(nw), ws(ws_floats);
  const Scratch w_copy(operands.weight_copy ? nw : 0);
  const float* wp = w.filled(nw);
  const uint16_t* w_bf16 = operands.weight_copy ? w_copy.filled<uint16_t>(nw) : nullptr;
  // x and dy filled, y the forward's output (dy's buffer: one pass runs at a time)
  const bool bf16 = operands.bf16_activations;
  if (bf16) {
    x.filled<uint16_t>(nx);
    y.filled<uint16_t>(ny);
  } else {
    x.filled(nx);
    y.filled(ny);
  }
  // the pass's output: y, dx (the activations' storage) or dw (fp32). (Assigned, not chosen
  // by a conditional expression of aggregates: nvcc 13.0's front end crashed on that one.)
  const autotune::Compare activations = bf16 ? autotune::Compare::Bf16 : autotune::Compare::F32;
  autotune::Output output{dw.get(), nw, autotune::Compare::F32};
  if (pass == ConvPass::Forward) output = {y.get(), ny, activations};
  if (pass == ConvPass::Dgrad) output = {dx.get(), nx, activations};
  const autotune::Check check({output});
  const std::vector<autotune::Timing> timings =
      autotune::check_and_time(candidates.size(), check, autotune::kSameSumsBound, [&](size_t i) {
        if (bf16)
          run_pass(s, pass, candidates[i], x.get<uint16_t>(), wp, y.get<uint16_t>(),
                   y.get<uint16_t>(), dx.get<uint16_t>(), dw.get(), ws.get(), w_bf16);
        else
          run_pass(s, pass, candidates[i], x.get(), wp, y.get(), y.get(), dx.get(), dw.get(),
                   ws.get(), w_bf16);
      });
  std::printf("conv autotune: %s (%lld, %lld, %lld, %lld) k%dx%d -> %lld stride %d, %s%s:",
              pass_name(pass), static_cast<long long>(s.n), static_cast<long long>(s.h),
              static_cast<long long>(s.w), static_cast<long long>(s.c_in), s.kh, s.kw,
              static_cast<long long>(s.c_out), s.stride,
              bf16 ? "bf16 activations" : "fp32 activations",
              operands.weight_copy ? " and weight copy" : "");
  std::vector<const char*> names;
  for (ConvAlgo a : candidates) names.push_back(conv_algo_name(a));
  return candidates[autotune::print_and_pick(
      names, timings, autotune::kSameSumsBound,
      candidates.size() < offered.size() ? " (cuDNN cannot run it)" : "")];
}

}  // namespace

ConvAlgo conv2d_autotuned(const Conv2dShape& s, ConvPass pass, ConvOperands operands,
                          const std::vector<ConvAlgo>& candidates) {
  // the shape, the pass, the operands, then the candidates (-1 past the last): no allocation
  // on the path every convolution of an auto run takes
  constexpr size_t kFixed = 15;
  using Key = std::array<int64_t, kFixed + kMaxAutotuneCandidates>;
  static std::mutex mutex;
  static std::map<Key, ConvAlgo> choices;
  CHECK(candidates.size() <= kMaxAutotuneCandidates,
        "cuda_conv: auto takes at most " << kMaxAutotuneCandidates << " candidates, got "
                                         << candidates.size());
  Key key{s.n, s.h, s.w, s.c_in, s.c_out, s.kh, s.kw, s.stride, s.pad_top, s.pad_left,
          s.pad_bottom, s.pad_right, static_cast<int64_t>(pass), operands.bf16_activations,
          operands.weight_copy};
  for (size_t i = 0; i < kMaxAutotuneCandidates; ++i)
    key[kFixed + i] = i < candidates.size() ? static_cast<int64_t>(candidates[i]) : -1;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = choices.find(key);
  if (found == choices.end())
    found = choices.emplace(key, tune(s, pass, operands, candidates)).first;
  return found->second;
}

}  // namespace ddpm::cuda
