// Shared helpers for the test suites: reproducible random tensors and guards against
// passes that compute nothing (all-zero or non-finite results).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/parameters.h"
#include "engine/tensor.h"

// Skips a CUDA test, saying why, when no usable device is present -- unless
// DDPM_REQUIRE_GPU=1 (set by scripts/gpu-check.sh and by the CPU emulation's tests), where a
// missing or broken device is a failure: a GPU machine whose runtime cannot start must not
// report 100% passed with every CUDA test skipped.
#define REQUIRE_GPU()                                                                 \
  do {                                                                                \
    if (!::ddpm::cuda_available()) {                                                  \
      if (::ddpm::test::gpu_required())                                               \
        FAIL() << "DDPM_REQUIRE_GPU is set but " << ::ddpm::cuda_unavailable_reason(); \
      GTEST_SKIP() << ::ddpm::cuda_unavailable_reason();                              \
    }                                                                                 \
  } while (0)

namespace ddpm::test {

// Under compute-sanitizer's racecheck / initcheck (scripts/gpu-check.sh) and under the CPU
// emulation of CUDA (tests/cuda_emulation), which run every thread's every access one by
// one, model-sized cases would take far beyond the time they have: DDPM_TEST_SMALL_SHAPES=1
// keeps the CUDA suites to their awkward small shapes and smaller models. A GPU's normal
// run and memcheck run everything. DDPM_TEST_SMALL_SHAPES=0 (or empty) asks for every shape,
// also of the emulated executables, which otherwise set it to 1 (for a change to a kernel,
// by hand: the model's shapes take the emulation minutes).
// A flag from the environment: set, and neither empty nor "0".
inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) != "0" && std::string(v) != "";
}

inline bool small_shapes_only() { return env_flag("DDPM_TEST_SMALL_SHAPES"); }

inline bool gpu_required() { return env_flag("DDPM_REQUIRE_GPU"); }

// A tensor of Philox normals times `scale`, converted to dtype (f32 or f64), on the CPU.
inline Tensor random_tensor(const Shape& shape, uint64_t stream, DType dtype = DType::F64,
                            double scale = 1.0) {
  Tensor t = randn(shape, /*seed=*/1234, stream).to(dtype);
  return scale == 1.0 ? t : ddpm::scale(t, scale);
}

// sum_k sum(x_k * c_k), c_k = random_tensor(x_k's shape, 900 + k, dtype) on x_k's device
// (returned in *cs when given). Recorded after a function's ops and added to its loss, its
// backward runs first: the function's backward then adds to a gradient already there
// (GradWrite::Accumulate) instead of writing the first one outright.
inline Tensor earlier_gradient_terms(const std::vector<Tensor>& xs, DType dtype,
                                     std::vector<Tensor>* cs = nullptr) {
  Tensor total;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor c = random_tensor(xs[k].shape(), 900 + k, dtype).to(xs[k].device());
    if (cs) cs->push_back(c);
    const Tensor term = sum(mul(xs[k], c));
    total = total.defined() ? add(total, term) : term;
  }
  return total;
}

// Every parameter of a finalized store redrawn as random_tensor(..., dtype, 0.4), parameter i
// from stream 100 + i: no layer zero-initialised (a fresh network's zero layers hide what
// passes through them from a gradient check or a comparison).
inline void redraw_parameters(const ParameterStore& store, DType dtype = DType::F64) {
  uint64_t stream = 100;
  for (const Tensor& p : store.parameters())
    p.copy_from(random_tensor(p.shape(), stream++, dtype, 0.4));
}

// Runs the enclosing scope on one kind of CPU kernels, restoring the setting after.
class UseCpuKernels {
 public:
  explicit UseCpuKernels(CpuKernels k) : saved_(cpu_kernels()) { set_cpu_kernels(k); }
  ~UseCpuKernels() { set_cpu_kernels(saved_); }
  UseCpuKernels(const UseCpuKernels&) = delete;
  UseCpuKernels& operator=(const UseCpuKernels&) = delete;

 private:
  CpuKernels saved_;
};

// Values of a CPU tensor as doubles, whatever its float dtype.
inline std::vector<double> values(const Tensor& t) {
  Tensor d = t.to(Device::CPU).to(DType::F64);
  return d.to_vector<double>();
}

// Fails unless every value is finite and at least one is non-zero.
inline void expect_finite_nonzero(const Tensor& t, const char* what) {
  double norm = 0;
  for (double v : values(t)) {
    ASSERT_TRUE(std::isfinite(v)) << what << " has a non-finite value";
    norm += v * v;
  }
  EXPECT_GT(norm, 0.0) << what << " is all zeros";
}

// |got - want| <= atol + rtol |want| per element (the first 5 misses reported, each naming
// the two sides: "cuda 0.5 vs cpu 0.25"); NaN/Inf in `got` fail; `want` must not be all
// zeros, or the comparison proves nothing.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                         double atol, double rtol, const std::string& what,
                         const char* got_name, const char* want_name) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double norm = 0;
  int reported = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " element " << i << " is " << got[i];
    norm += double(want[i]) * want[i];
    if (std::fabs(got[i] - want[i]) > atol + rtol * std::fabs(want[i]) && reported++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << got_name << " " << got[i] << " vs "
                    << want_name << " " << want[i];
  }
  EXPECT_GT(norm, 0.0) << what << " is all zeros (" << want_name
                       << "): the comparison proves nothing";
}

// |got - want| <= tol * rms(want) (+ rel * |want|) for every element: the bound for
// reduced-precision operands (TF32, bf16), whose error scales with the output's magnitude
// rather than each element's; `rel` for an error that also scales with each element's (a
// rounding toward zero at every step of a sum).
inline void expect_close_to_rms(const std::vector<float>& got, const std::vector<float>& want,
                                double tol, const std::string& what, double rel = 0.0) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double sq = 0;
  for (float v : want) sq += double(v) * v;
  const double rms = std::sqrt(sq / std::max<size_t>(1, want.size()));
  ASSERT_GT(rms, 0.0) << what << " is all zeros: the comparison proves nothing";
  int reported = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " element " << i;
    if (std::fabs(got[i] - want[i]) > tol * rms + rel * std::fabs(want[i]) && reported++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i]
                    << " (rms " << rms << ")";
  }
}

// Runs `f` and expects a ddpm::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

// Whether an autotuner's line (kernels/cuda/autotune_check.cuh's format) timed the
// candidate `name`: "NAME 0.123 ms" after ": " or ", ", where one it left out reads "NAME
// left out (...)" and a reference it could not check "NAME kept untimed (...)".
inline bool autotune_timed(const std::string& line, const std::string& name) {
  for (const char* before : {": ", ", "}) {
    const std::string entry = before + name + " ";
    for (size_t at = line.find(entry); at != std::string::npos; at = line.find(entry, at + 1)) {
      const size_t next = at + entry.size();
      if (next < line.size() && line[next] >= '0' && line[next] <= '9') return true;
    }
  }
  return false;
}

}  // namespace ddpm::test
