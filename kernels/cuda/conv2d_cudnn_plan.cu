// cuDNN's side of `cuda_conv: cudnn`: the library, the handle, and the plans with their
// choice of algorithms, heuristic or timed (conv2d_cudnn_plan.cuh says how and why).
#if !DDPM_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include "kernels/cuda/conv2d_cudnn_plan.cuh"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/autotune_scratch.cuh"

namespace ddpm::cuda {

namespace {
bool g_benchmark = false;  // set_conv2d_cudnn_benchmark
}  // namespace

void set_conv2d_cudnn_benchmark(bool on) { g_benchmark = on; }
bool conv2d_cudnn_benchmark() { return g_benchmark; }

namespace cudnn_detail {

// ---- the library and the handle ----

const Cudnn& cudnn() {
  static const Cudnn api = [] {
    Cudnn a{};
#if DDPM_CUDA_EMULATION
#define DDPM_CUDNN_DIRECT(f) a.f = &::f;
    DDPM_CUDNN_FUNCTIONS(DDPM_CUDNN_DIRECT)
#undef DDPM_CUDNN_DIRECT
#else
    const std::string soname = "libcudnn.so." + std::to_string(CUDNN_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef DDPM_CUDNN_LIBRARY_DIR
    if (lib == nullptr)
      lib = dlopen((DDPM_CUDNN_LIBRARY_DIR "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    CHECK(lib != nullptr, "cuda_conv: cudnn needs cuDNN " << CUDNN_MAJOR << ": cannot load "
                                                          << soname << ": " << dlerror());
    const auto symbol = [&](const char* name) {
      void* p = dlsym(lib, name);
      CHECK(p != nullptr, "cuDNN (" << soname << ") has no " << name);
      return p;
    };
#define DDPM_CUDNN_SYMBOL(f) a.f = reinterpret_cast<decltype(&::f)>(symbol(#f));
    DDPM_CUDNN_FUNCTIONS(DDPM_CUDNN_SYMBOL)
#undef DDPM_CUDNN_SYMBOL
#endif
    return a;
  }();
  return api;
}

void check(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw_error(file, line, std::string("cuDNN error: ") + cudnn().cudnnGetErrorString(status),
                call);
}
cudnnHandle_t handle() {
  static const cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    DDPM_CUDNN(cudnnCreate(&created));
    DDPM_CUDNN(cudnnSetStream(created, engine_stream()));  // engine/cuda_stream.h
    return created;
  }();
  return h;
}

// ---- plans: descriptors and algorithms per shape and math ----

namespace {
const char* math_name(CudnnMath m) {
  return m == CudnnMath::Bf16 ? "bf16" : m == CudnnMath::Tf32 ? "TF32" : "fp32";
}
}  // namespace

std::string describe(const Conv2dShape& s, CudnnMath m) {
  std::ostringstream os;
  os << "(" << s.n << ", " << s.h << ", " << s.w << ", " << s.c_in << ") k" << s.kh << "x" << s.kw
     << " -> " << s.c_out << " stride " << s.stride << " pad " << s.pad_top << "," << s.pad_left
     << "," << s.pad_bottom << "," << s.pad_right << " " << math_name(m);
  return os.str();
}

namespace {

// The heuristics' whole ranking of one pass (Perf: that pass's cuDNN struct): room for every
// algorithm cuDNN 9 has for a pass (8 forward, 6 dgrad, 7 wgrad).
constexpr int kRanked = 8;
template <class Perf>
struct Ranked {
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  int returned = 0;
  Perf perf[kRanked] = {};
};

// The first candidate that succeeded and is deterministic, else the first that succeeded.
template <class Perf>
bool choose(const Ranked<Perf>& r, decltype(Perf::algo)* algo, std::string* why,
            const char* pass) {
  if (r.status != CUDNN_STATUS_SUCCESS) {
    *why = std::string(pass) + " heuristics: " + cudnn().cudnnGetErrorString(r.status);
    return false;
  }
  for (bool deterministic : {true, false})
    for (int i = 0; i < r.returned; ++i)
      if (r.perf[i].status == CUDNN_STATUS_SUCCESS &&
          (!deterministic || r.perf[i].determinism == CUDNN_DETERMINISTIC)) {
        *algo = r.perf[i].algo;
        return true;
      }
  *why = std::string("no ") + pass + " algorithm";
  return false;
}

// ---- the benchmark (set_conv2d_cudnn_benchmark) ----

template <class Algo>
struct Candidate {
  Algo algo;
  size_t bytes;  // its workspace
};

// One pass's candidates: the heuristics' pick (`chosen`, the reference) first, then every
// other algorithm the heuristics ranked as able to run that is deterministic and needs at
// most kCudnnBenchmarkWorkspaceCap (its size from `bytes_of`, cuDNN's query); `skipped`
// names the others that could run, and why not.
template <class Perf, class BytesOf>
std::vector<Candidate<decltype(Perf::algo)>> candidates(const Ranked<Perf>& r,
                                                        decltype(Perf::algo) chosen,
                                                        size_t chosen_bytes, BytesOf bytes_of,
                                                        std::string* skipped) {
  std::vector<Candidate<decltype(Perf::algo)>> c{{chosen, chosen_bytes}};
  const auto skip = [&](int algo, const std::string& why) {
    *skipped += (skipped->empty() ? " (not timed: algo " : "; algo ") + std::to_string(algo) +
                ", " + why;
  };
  for (int i = 0; i < r.returned; ++i) {
    const Perf& q = r.perf[i];
    if (q.algo == chosen || q.status != CUDNN_STATUS_SUCCESS) continue;
    const int algo = static_cast<int>(q.algo);
    size_t bytes = 0;
    if (q.determinism != CUDNN_DETERMINISTIC)
      skip(algo, "not deterministic");
    else if (bytes_of(q.algo, &bytes) != CUDNN_STATUS_SUCCESS)
      skip(algo, "no workspace size");
    else if (bytes > kCudnnBenchmarkWorkspaceCap)
      skip(algo, std::to_string(bytes >> 20) + " MiB of workspace");
    else
      c.push_back({q.algo, bytes});
  }
  if (!skipped->empty()) *skipped += ")";
  return c;
}

// One pass timed: its candidates (above) run through the engine's chooser, and the one
// kept becomes the plan's (*algo, its workspace *bytes; on entry the heuristics' pick).
// run(algo, workspace, bytes) makes cuDNN's call into `out`. A call cuDNN refuses leaves
// the output as the chooser poisoned it (NaN), so that candidate is left out, its status in
// its name.
template <class Perf, class BytesOf, class Run>
void time_pass(const char* pass, const std::string& shape, const Ranked<Perf>& ranked,
               BytesOf bytes_of, const autotune::Output& out, Run run,
               decltype(Perf::algo)* algo, size_t* bytes) {
  using Algo = decltype(Perf::algo);
  std::string skipped;
  const std::vector<Candidate<Algo>> c = candidates(ranked, *algo, *bytes, bytes_of, &skipped);
  size_t most = 0;
  for (const Candidate<Algo>& k : c) most = std::max(most, k.bytes);
  const autotune::Scratch workspace(static_cast<int64_t>((most + 3) / 4));
  std::vector<cudnnStatus_t> refused(c.size(), CUDNN_STATUS_SUCCESS);
  const autotune::Check check({out});
  const std::vector<autotune::Timing> timings =
      autotune::check_and_time(c.size(), check, autotune::kSameSumsBound, [&](size_t i) {
        const cudnnStatus_t status =
            run(c[i].algo, c[i].bytes ? workspace.get() : nullptr, c[i].bytes);
        if (status != CUDNN_STATUS_SUCCESS) refused[i] = status;
      });
  std::vector<std::string> labels;
  for (size_t i = 0; i < c.size(); ++i)
    labels.push_back("algo " + std::to_string(static_cast<int>(c[i].algo)) +
                     (refused[i] == CUDNN_STATUS_SUCCESS
                          ? std::string()
                          : std::string(" (") + cudnn().cudnnGetErrorString(refused[i]) + ")"));
  std::vector<const char*> names;
  for (const std::string& l : labels) names.push_back(l.c_str());
  std::printf("cudnn benchmark: %s %s:", pass, shape.c_str());
  const size_t kept = autotune::print_and_pick(names, timings, autotune::kSameSumsBound,
                                               skipped.c_str());
  *algo = c[kept].algo;
  *bytes = c[kept].bytes;
}

// The plan's algorithms timed (conv2d_cudnn_plan.cuh): scratch operands of the shape in the
// math's storage, each pass's output compared with the heuristics' pick's.
template <class FwdPerf, class DataPerf, class FilterPerf>
void benchmark(const Conv2dShape& s, CudnnMath math, Plan& p, const Ranked<FwdPerf>& fwd,
               const Ranked<DataPerf>& data, const Ranked<FilterPerf>& filter) {
  const std::string shape = describe(s, math);
  const bool bf16 = math == CudnnMath::Bf16;
  const int64_t nx = s.n * p.in_h * p.in_w * s.c_in;
  const int64_t nw = static_cast<int64_t>(s.kh) * s.kw * s.c_in * s.c_out;
  const int64_t ny = s.n * s.out_h() * s.out_w() * s.c_out;
  const auto floats = [&](int64_t n) { return bf16 ? (n + 1) / 2 : n; };
  const autotune::Scratch x(floats(nx)), w(floats(nw)), dy(floats(ny));
  const autotune::Scratch y(floats(ny)), dx(floats(nx)), dw(floats(nw));
  const auto fill = [&](const autotune::Scratch& b, int64_t n) {
    if (bf16)
      b.filled<uint16_t>(n);
    else
      b.filled<float>(n);
  };
  fill(x, nx);
  fill(w, nw);
  fill(dy, ny);
  const autotune::Compare compare = bf16 ? autotune::Compare::Bf16 : autotune::Compare::F32;
  const Cudnn& api = cudnn();
  const float one = 1.0f, zero = 0.0f;
  time_pass(
      "forward", shape, fwd,
      [&](cudnnConvolutionFwdAlgo_t a, size_t* b) {
        return api.cudnnGetConvolutionForwardWorkspaceSize(handle(), p.x, p.w, p.conv, p.y, a, b);
      },
      {y.get(), ny, compare},
      [&](cudnnConvolutionFwdAlgo_t a, void* ws, size_t bytes) {
        return api.cudnnConvolutionForward(handle(), &one, p.x, x.get(), p.w, w.get(), p.conv, a,
                                           ws, bytes, &zero, p.y, y.get());
      },
      &p.fwd, &p.fwd_bytes);
  time_pass(
      "dgrad", shape, data,
      [&](cudnnConvolutionBwdDataAlgo_t a, size_t* b) {
        return api.cudnnGetConvolutionBackwardDataWorkspaceSize(handle(), p.w, p.y, p.conv, p.x,
                                                                a, b);
      },
      {dx.get(), nx, compare},
      [&](cudnnConvolutionBwdDataAlgo_t a, void* ws, size_t bytes) {
        return api.cudnnConvolutionBackwardData(handle(), &one, p.w, w.get(), p.y, dy.get(),
                                                p.conv, a, ws, bytes, &zero, p.x, dx.get());
      },
      &p.data, &p.data_bytes);
  time_pass(
      "wgrad", shape, filter,
      [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* b) {
        return api.cudnnGetConvolutionBackwardFilterWorkspaceSize(handle(), p.x, p.y, p.conv,
                                                                  p.w, a, b);
      },
      {dw.get(), nw, compare},
      [&](cudnnConvolutionBwdFilterAlgo_t a, void* ws, size_t bytes) {
        return api.cudnnConvolutionBackwardFilter(handle(), &one, p.x, x.get(), p.y, dy.get(),
                                                  p.conv, a, ws, bytes, &zero, p.w, dw.get());
      },
      &p.filter, &p.filter_bytes);
}

Plan make_plan(const Conv2dShape& s, CudnnMath math) {
  // The benchmark allocates and waits, which a capture cannot hold (checked before any
  // descriptor is made, so that the error leaves nothing behind).
  CHECK(!g_benchmark || !autotune::capturing(),
        "cuda_autotune: cuDNN's algorithms for a new convolution shape, " << describe(s, math)
            << ", cannot be timed inside a CUDA graph capture: the eager steps before a "
               "capture must see every shape");
  Plan p;
  const int pad_h = std::min(s.pad_top, s.pad_bottom), pad_w = std::min(s.pad_left, s.pad_right);
  p.in_h = s.h + s.pad_top + s.pad_bottom - 2 * pad_h;
  p.in_w = s.w + s.pad_left + s.pad_right - 2 * pad_w;
  p.top = s.pad_top - pad_h;
  p.left = s.pad_left - pad_w;
  p.padded = p.in_h != s.h || p.in_w != s.w;
  const cudnnDataType_t data = math == CudnnMath::Bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const cudnnMathType_t mode = math == CudnnMath::Fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  const Cudnn& api = cudnn();
  // A descriptor cuDNN refuses makes the shape unsupported (and says which call), not fatal.
  const auto ok = [&](cudnnStatus_t status, const char* what) {
    if (status != CUDNN_STATUS_SUCCESS && p.why.empty())
      p.why = std::string(what) + ": " + api.cudnnGetErrorString(status);
    return p.why.empty();
  };
  DDPM_CUDNN(cudnnCreateTensorDescriptor(&p.x));
  DDPM_CUDNN(cudnnCreateTensorDescriptor(&p.y));
  DDPM_CUDNN(cudnnCreateFilterDescriptor(&p.w));
  DDPM_CUDNN(cudnnCreateConvolutionDescriptor(&p.conv));
  if (!ok(api.cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NHWC, data, i(s.n), i(s.c_in),
                                         i(p.in_h), i(p.in_w)), "input descriptor") ||
      !ok(api.cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NHWC, data, i(s.n), i(s.c_out),
                                         i(s.out_h()), i(s.out_w())), "output descriptor") ||
      !ok(api.cudnnSetFilter4dDescriptor(p.w, data, CUDNN_TENSOR_NHWC, i(s.c_out), i(s.c_in), s.kh,
                                         s.kw), "filter descriptor") ||
      !ok(api.cudnnSetConvolution2dDescriptor(p.conv, pad_h, pad_w, s.stride, s.stride, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
          "convolution descriptor") ||
      !ok(api.cudnnSetConvolutionMathType(p.conv, mode), "math type"))
    return p;
  Ranked<cudnnConvolutionFwdAlgoPerf_t> fwd;
  fwd.status = api.cudnnGetConvolutionForwardAlgorithm_v7(handle(), p.x, p.w, p.conv, p.y,
                                                          kRanked, &fwd.returned, fwd.perf);
  if (!choose(fwd, &p.fwd, &p.why, "forward")) return p;
  Ranked<cudnnConvolutionBwdDataAlgoPerf_t> dgrad;
  dgrad.status = api.cudnnGetConvolutionBackwardDataAlgorithm_v7(
      handle(), p.w, p.y, p.conv, p.x, kRanked, &dgrad.returned, dgrad.perf);
  if (!choose(dgrad, &p.data, &p.why, "dgrad")) return p;
  Ranked<cudnnConvolutionBwdFilterAlgoPerf_t> wgrad;
  wgrad.status = api.cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      handle(), p.x, p.y, p.conv, p.w, kRanked, &wgrad.returned, wgrad.perf);
  if (!choose(wgrad, &p.filter, &p.why, "wgrad")) return p;
  if (!ok(api.cudnnGetConvolutionForwardWorkspaceSize(handle(), p.x, p.w, p.conv, p.y, p.fwd,
                                                      &p.fwd_bytes), "forward workspace") ||
      !ok(api.cudnnGetConvolutionBackwardDataWorkspaceSize(handle(), p.w, p.y, p.conv, p.x, p.data,
                                                           &p.data_bytes), "dgrad workspace") ||
      !ok(api.cudnnGetConvolutionBackwardFilterWorkspaceSize(handle(), p.x, p.y, p.conv, p.w,
                                                             p.filter, &p.filter_bytes),
          "wgrad workspace"))
    return p;
  p.supported = true;
  if (g_benchmark) benchmark(s, math, p, fwd, dgrad, wgrad);
  return p;
}

}  // namespace

const Plan& plan(const Conv2dShape& s, CudnnMath math) {
  static std::mutex mutex;
  // Never destroyed, like the handle: the descriptors must outlive every use, and at exit
  // cuDNN may already be unloaded.
  static auto& plans = *new std::map<std::array<int64_t, 14>, Plan>();
  const std::array<int64_t, 14> key{s.n, s.h, s.w, s.c_in, s.c_out, s.kh, s.kw, s.stride,
                                    s.pad_top, s.pad_left, s.pad_bottom, s.pad_right,
                                    static_cast<int64_t>(math), g_benchmark};
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  const Plan& p = plans.emplace(key, make_plan(s, math)).first->second;
  if (p.supported)
    std::printf("cudnn: conv %s: forward algo %d, dgrad algo %d, wgrad algo %d, workspace "
                "%.2f MiB\n", describe(s, math).c_str(), static_cast<int>(p.fwd),
                static_cast<int>(p.data), static_cast<int>(p.filter),
                std::max({p.fwd_bytes, p.data_bytes, p.filter_bytes}) / 1048576.0);
  else
    std::printf("cudnn: conv %s: cuDNN cannot run it (%s); the engine's own kernel runs this "
                "shape\n", describe(s, math).c_str(), p.why.c_str());
  return p;
}

const Plan& supported_plan(const Conv2dShape& s, CudnnMath math) {
  const Plan& p = plan(s, math);
  CHECK(p.supported, "cuDNN cannot run the convolution " << describe(s, math) << ": " << p.why);
  return p;
}

}  // namespace cudnn_detail

}  // namespace ddpm::cuda
