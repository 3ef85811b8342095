// cpu-bench: the CPU kernels, reference (kernels/cpu) and fast (kernels/cpu_fast: oneDNN,
// OpenBLAS), timed op by op at the shapes of the models the CPU trains, plus the
// convolution done as im2col + OpenBLAS SGEMM (the other way to hand a convolution to a
// library), the U-Net's upsamplers both ways (upsample then conv, and by output phase), and
// whole training steps (the CIFAR-10 one also with the upsamplers as upsample then conv).
//
//   cpu-bench [ops] [step] [--threads N] [--reps N] [--json FILE]
//             [--config tiny.json|fashion.json|cifar10_ddpm.json] [--kernels reference|fast]
//
// Method: per measurement, 2 warm-up runs, then the median of --reps (default 7) runs timed
// with steady_clock; GFLOP/s = 2 x multiply-adds / time. Threads: OpenMP's pool (OpenBLAS and
// oneDNN use it too), --threads or OMP_NUM_THREADS. Training steps: ImageRun::step() of the
// configs below, median seconds per step after 2 warm-up steps. Figures, not tests: nothing
// here asserts a speed.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/file_io.h"
#include "engine/ops.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/random.h"
#include "models/config_reader.h"
#include "models/unet/image_train.h"

#if DDPM_WITH_CPU_FAST
#include <cblas.h>

#include "kernels/cpu_fast/conv2d.h"
#include "kernels/cpu_fast/gemm.h"
#include "kernels/cpu_fast/linear.h"
#include "kernels/cpu_fast/random.h"
#endif

namespace ddpm {
namespace {

struct Options {
  int reps = 7;
  std::string json;
  std::string config;   // step: only this config of configs/ (default: all three)
  std::string kernels;  // step: only "reference" or "fast" (default: both)
};

// The medians of fns[i]'s times, the calls interleaved (fns[0], fns[1], ..., fns[0], ...)
// after two warm-up calls each, so that a noisy neighbour slows them alike: how two
// versions of one thing are compared on a shared machine.
std::vector<double> interleaved_median_seconds(const std::vector<std::function<void()>>& fns,
                                               int reps) {
  for (const auto& fn : fns)
    for (int i = 0; i < 2; ++i) fn();
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < reps; ++r)
    for (size_t f = 0; f < fns.size(); ++f) {
      const auto a = std::chrono::steady_clock::now();
      fns[f]();
      t[f].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
  std::vector<double> medians;
  for (std::vector<double>& times : t) {
    std::sort(times.begin(), times.end());
    medians.push_back(times[times.size() / 2]);
  }
  return medians;
}

// fn's median time over reps calls, after two warm-up calls.
double median_seconds(const std::function<void()>& fn, int reps) {
  return interleaved_median_seconds({fn}, reps)[0];
}

nlohmann::json g_rows = nlohmann::json::array();

// One printed and recorded measurement: GFLOP/s for an op (flops > 0), img/s for a step.
// GB/s for a memory-bound op (bytes > 0).
void row(const std::string& op, const std::string& shape, const std::string& variant,
         double seconds, double flops, int64_t images = 0, double bytes = 0) {
  nlohmann::json r = {{"op", op}, {"shape", shape}, {"variant", variant}, {"ms", seconds * 1e3}};
  std::printf("%-12s %-30s %-20s %10.3f ms", op.c_str(), shape.c_str(), variant.c_str(),
              seconds * 1e3);
  if (flops > 0) {
    r["gflops"] = flops / seconds * 1e-9;
    std::printf(" %9.1f GFLOP/s", flops / seconds * 1e-9);
  }
  if (images > 0) {
    r["images_per_second"] = static_cast<double>(images) / seconds;
    std::printf(" %9.1f img/s", static_cast<double>(images) / seconds);
  }
  if (bytes > 0) {
    r["gb_per_s"] = bytes / seconds * 1e-9;
    std::printf(" %9.1f GB/s", bytes / seconds * 1e-9);
  }
  std::printf("\n");
  g_rows.push_back(r);
}

std::vector<float> randoms(int64_t n, uint64_t stream) {
  return randn(Shape{n}, 7, stream).to_vector<float>();
}

#if DDPM_WITH_CPU_FAST
// y = im2col(x) w + b: the column matrix (M x K) built in full, then one SGEMM.
void conv_im2col_sgemm(const Conv2dShape& s, const float* x, const float* w, const float* b,
                       float* y, std::vector<float>& cols) {
  const int64_t oh = s.out_h(), ow = s.out_w(), m = s.n * oh * ow, k = s.kh * s.kw * s.c_in;
  cols.resize(static_cast<size_t>(m * k));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < m; ++r) {
    const int64_t n = r / (oh * ow), yy = r / ow % oh, xx = r % ow;
    float* dst = cols.data() + r * k;
    for (int kh = 0; kh < s.kh; ++kh)
      for (int kw = 0; kw < s.kw; ++kw, dst += s.c_in) {
        const int64_t ih = yy * s.stride - s.pad_top + kh, iw = xx * s.stride - s.pad_left + kw;
        if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) {
          std::fill(dst, dst + s.c_in, 0.0f);
        } else {
          std::copy_n(x + ((n * s.h + ih) * s.w + iw) * s.c_in, s.c_in, dst);
        }
      }
  }
  for (int64_t r = 0; r < m; ++r) std::copy_n(b, s.c_out, y + r * s.c_out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
              static_cast<int>(s.c_out), static_cast<int>(k), 1.0f, cols.data(),
              static_cast<int>(k), w, static_cast<int>(s.c_out), 1.0f, y, static_cast<int>(s.c_out));
}
#endif

struct ConvCase {
  const char* name;
  int64_t n, h, c_in, c_out;
};

void bench_ops(const Options& o) {
  // the tiny model's (batch 16), the Fashion-MNIST model's (batch 32) and the CIFAR-10
  // model's (batch 4) 3x3 convolutions
  const ConvCase convs[] = {{"tiny 32x32", 16, 32, 16, 16},  {"tiny 16x16", 16, 16, 32, 32},
                            {"fashion 28x28", 32, 28, 32, 32}, {"fashion 14x14", 32, 14, 64, 64},
                            {"cifar 32x32", 4, 32, 128, 128}, {"cifar 16x16", 4, 16, 256, 256}};
  for (const ConvCase& c : convs) {
    const Conv2dShape s =
        conv2d_shape(Shape{c.n, c.h, c.h, c.c_in}, Shape{3, 3, c.c_in, c.c_out}, Conv2dParams::same(3));
    const int64_t xs = s.n * s.h * s.w * s.c_in, ws = 9 * s.c_in * s.c_out, ys = s.n * s.h * s.w * s.c_out;
    const std::vector<float> x = randoms(xs, 1), w = randoms(ws, 2), b = randoms(s.c_out, 3),
                             dy = randoms(ys, 4);
    std::vector<float> y(ys), dx(xs), dw(ws), db(s.c_out);
    const double flops = 2.0 * ys * 9 * s.c_in;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%s n%lld %lld->%lld", c.name, (long long)c.n,
                  (long long)c.c_in, (long long)c.c_out);
    row("conv fwd", shape, "reference", median_seconds([&] {
          cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        }, o.reps), flops);
    row("conv dgrad", shape, "reference", median_seconds([&] {
          cpu::conv2d_backward<float>(s, x.data(), w.data(), dy.data(), dx.data(), nullptr, nullptr);
        }, o.reps), flops);
    row("conv wgrad", shape, "reference", median_seconds([&] {
          cpu::conv2d_backward<float>(s, x.data(), w.data(), dy.data(), nullptr, dw.data(), db.data());
        }, o.reps), flops);
#if DDPM_WITH_CPU_FAST
    std::vector<float> cols;
    row("conv fwd", shape, "im2col + OpenBLAS", median_seconds([&] {
          conv_im2col_sgemm(s, x.data(), w.data(), b.data(), y.data(), cols);
        }, o.reps), flops);
    row("conv fwd", shape, "fast (oneDNN)", median_seconds([&] {
          cpu_fast::conv2d_forward(s, x.data(), w.data(), b.data(), y.data());
        }, o.reps), flops);
    row("conv dgrad", shape, "fast (oneDNN)", median_seconds([&] {
          cpu_fast::conv2d_backward(s, x.data(), w.data(), dy.data(), dx.data(), nullptr, nullptr);
        }, o.reps), flops);
    row("conv wgrad", shape, "fast (oneDNN)", median_seconds([&] {
          cpu_fast::conv2d_backward(s, x.data(), w.data(), dy.data(), nullptr, dw.data(), db.data());
        }, o.reps), flops);
#endif
  }
  // The upsamplers through the engine's ops (the CPU kernels cpu_kernels selects), forward
  // and forward + the tape's backward: upsample_nearest2x then a 3x3 conv2d, against
  // upsample_conv3x3 (by output phase: four 2x2 convolutions of the small map). GFLOP/s of
  // the model's FLOPs (the 3x3 convolution of the upsampled map) for both.
  const ConvCase ups[] = {{"fashion 7x7->14x14", 32, 7, 64, 64},
                          {"cifar 16x16->32x32", 4, 16, 256, 256}};
  const CpuKernels kernels_before = cpu_kernels();
  for (const ConvCase& c : ups) {
    Tensor x = randn(Shape{c.n, c.h, c.h, c.c_in}, 7, 11);
    Tensor w = scale(randn(Shape{3, 3, c.c_in, c.c_out}, 7, 12), 0.05);
    Tensor b = randn(Shape{c.c_out}, 7, 13);
    const Tensor dy = randn(Shape{c.n, 2 * c.h, 2 * c.h, c.c_out}, 7, 14);
    for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
    const double flops = 2.0 * c.n * (2 * c.h) * (2 * c.h) * c.c_out * 9 * c.c_in;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%s n%lld %lld->%lld", c.name, (long long)c.n,
                  (long long)c.c_in, (long long)c.c_out);
    for (const CpuKernels k : {CpuKernels::Reference, CpuKernels::Fast}) {
      if (k == CpuKernels::Fast && !cpu_fast_kernels_built()) continue;
      set_cpu_kernels(k);
      const std::string kernels = k == CpuKernels::Fast ? "fast" : "reference";
      for (const bool by_phase : {false, true}) {
        const auto op = [&] {
          return by_phase ? upsample_conv3x3(x, w, b)
                          : conv2d(upsample_nearest2x(x), w, b, Conv2dParams::same(3));
        };
        const std::string variant = kernels + (by_phase ? ", by phase" : ", upsample+conv");
        row("upsample fwd", shape, variant, median_seconds([&] {
              NoGradGuard no_grad;
              op();
            }, o.reps), flops);
        row("upsample f+b", shape, variant, median_seconds([&] {
              tape().backward(op(), dy);
            }, o.reps), 3 * flops);
      }
    }
  }
  set_cpu_kernels(kernels_before);
  // linear: the CIFAR model's time-embedding MLP, an attention projection at 16x16, and a
  // fashion.json 1x1 skip at batch 32
  for (const LinearShape& s : {LinearShape{128, 512, 512}, LinearShape{4 * 256, 256, 768},
                               LinearShape{32 * 784, 96, 32}}) {
    const std::vector<float> x = randoms(s.m * s.k, 1), w = randoms(s.k * s.n, 2), b = randoms(s.n, 3);
    std::vector<float> y(s.m * s.n);
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lld * %lldx%lld", (long long)s.m, (long long)s.k,
                  (long long)s.k, (long long)s.n);
    const double flops = 2.0 * s.m * s.k * s.n;
    row("linear fwd", shape, "reference", median_seconds([&] {
          cpu::linear_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        }, o.reps), flops);
#if DDPM_WITH_CPU_FAST
    // the product alone in OpenBLAS's SGEMM and in oneDNN's, the measurement behind
    // kernels/cpu_fast/gemm.h's choice; then the engine's fast op (oneDNN, and the bias)
    const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
    row("linear fwd", shape, "GEMM only, OpenBLAS", median_seconds([&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, x.data(), k,
                      w.data(), n, 0.0f, y.data(), n);
        }, o.reps), flops);
    row("linear fwd", shape, "GEMM only, oneDNN", median_seconds([&] {
          cpu_fast::sgemm(false, false, m, n, k, 1.0f, x.data(), k, w.data(), n, 0.0f, y.data(), n);
        }, o.reps), flops);
    row("linear fwd", shape, "fast (oneDNN)", median_seconds([&] {
          cpu_fast::linear_forward(s, x.data(), w.data(), b.data(), y.data());
        }, o.reps), flops);
#endif
  }
}

// Dropout at the CIFAR-10 model's 32x32 activations (batch 8, 128 channels: 1M elements),
// forward (in place, as the fused group_norm_silu_dropout calls it) and backward, p = 0.1.
// The Philox draws are the work, not the 8 bytes an element moves (read and write, or read
// and add), which the GB/s column counts.
void bench_dropout(const Options& o) {
  const int64_t n = int64_t{8} * 32 * 32 * 128;
  const float p = 0.1f;
  const std::vector<float> x = randoms(n, 1);
  std::vector<float> y = x;
  const auto rows = [&](const char* variant, const std::function<void()>& fwd,
                        const std::function<void()>& bwd) {
    row("dropout fwd", "cifar 32x32 n8 128 ch", variant, median_seconds(fwd, o.reps), 0, 0,
        8.0 * static_cast<double>(n));
    row("dropout bwd", "cifar 32x32 n8 128 ch", variant, median_seconds(bwd, o.reps), 0, 0,
        8.0 * static_cast<double>(n));
  };
  rows("reference",
       [&] { cpu::dropout_forward<float>(n, p, 7, 3, y.data(), y.data()); },
       [&] { cpu::dropout_backward<float>(n, p, 7, 3, x.data(), y.data()); });
#if DDPM_WITH_CPU_FAST
  rows("fast",
       [&] { cpu_fast::dropout_forward(n, p, 7, 3, y.data(), y.data()); },
       [&] { cpu_fast::dropout_backward(n, p, 7, 3, x.data(), y.data()); });
#endif
}

void bench_steps(const Options& o) {
  struct StepCase {
    const char* config;
    std::vector<std::string> overrides;
    bool sample;
    const char* note = "";  // beside the kernels' name: what the overrides change
  };
  const std::string dir = std::string(DDPM_SOURCE_DIR) + "/configs/";
  const StepCase cases[] = {
      {"tiny.json", {"batch_size=16"}, true},
      {"fashion.json", {"batch_size=32"}, true},
      {"cifar10_ddpm.json", {"batch_size=4"}, false},
      {"cifar10_ddpm.json", {"batch_size=4", "upsample_by_phase=false"}, false,
       ", upsample then conv"}};
  for (const StepCase& c : cases) {
    if (!o.config.empty() && o.config != c.config) continue;
    for (const char* kernels : {"reference", "fast"}) {
      if (!std::strcmp(kernels, "fast") && !cpu_fast_kernels_built()) continue;
      if (!o.kernels.empty() && o.kernels != kernels) continue;
      nlohmann::json j = load_json_file(dir + c.config);
      for (const std::string& s : c.overrides) apply_override(j, s);
      apply_override(j, std::string("cpu_kernels=") + kernels);
      apply_override(j, "device=cpu");
      const ImageTrainConfig config = read_image_train_config(j, c.config);
      ImageRun run(config);
      char shape[64];
      std::snprintf(shape, sizeof shape, "%s batch %lld", c.config, (long long)config.batch_size);
      SamplerConfig sc = config.sampler;  // 16 images, 50 DDIM steps, the EMA weights: what
      sc.kind = SamplerKind::Ddim;        // a run ends with
      sc.steps = 50;
      const auto step = [&] { run.step(); };
      const auto sample = [&] { run.sample(16, 1, sc, true); };
      const std::string variant = kernels + std::string(c.note);
#if DDPM_WITH_CPU_FAST
      if (!std::strcmp(kernels, "fast")) {
        // the fast kernels' products on oneDNN's sgemm (theirs) and on OpenBLAS's, in turn
        const auto on = [](cpu_fast::GemmLibrary library, const std::function<void()>& fn) {
          return [library, fn] {
            cpu_fast::set_gemm_library(library);
            fn();
            cpu_fast::set_gemm_library(cpu_fast::GemmLibrary::OneDnn);
          };
        };
        const auto both = [&](const std::function<void()>& fn, int reps) {
          return interleaved_median_seconds({on(cpu_fast::GemmLibrary::OneDnn, fn),
                                             on(cpu_fast::GemmLibrary::OpenBlas, fn)},
                                            reps);
        };
        const std::vector<double> secs = both(step, std::max(3, o.reps / 2));
        row("train step", shape, variant, secs[0], 0, config.batch_size);
        row("train step", shape, variant + ", OpenBLAS GEMMs", secs[1], 0, config.batch_size);
        if (c.sample) {
          const std::vector<double> s = both(sample, 3);
          row("sample", "16 images, 50 DDIM steps", kernels, s[0], 0, 16);
          row("sample", "16 images, 50 DDIM steps", kernels + std::string(", OpenBLAS GEMMs"),
              s[1], 0, 16);
        }
        continue;
      }
#endif
      row("train step", shape, variant, median_seconds(step, std::max(3, o.reps / 2)), 0,
          config.batch_size);
      if (c.sample)
        row("sample", "16 images, 50 DDIM steps", kernels, median_seconds(sample, 3), 0, 16);
    }
  }
}

constexpr const char* kUsage =
    "ops, step, --threads N, --reps N, --json FILE, --config tiny.json|fashion.json|"
    "cifar10_ddpm.json, --kernels reference|fast";

int run(int argc, char** argv) {
  Options o;
  bool ops = false, steps = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "ops") ops = true;
    else if (a == "step") steps = true;
    else if (a == "--threads" && i + 1 < argc) omp_set_num_threads(static_cast<int>(parse_integer(argv[++i], "--threads")));
    else if (a == "--reps" && i + 1 < argc) o.reps = static_cast<int>(parse_integer(argv[++i], "--reps"));
    else if (a == "--json" && i + 1 < argc) o.json = argv[++i];
    else if (a == "--config" && i + 1 < argc) o.config = argv[++i];
    else if (a == "--kernels" && i + 1 < argc) o.kernels = argv[++i];
    else THROW_ERROR("unknown argument '" << a << "' (" << kUsage << ")");
  }
  if (!ops && !steps) ops = steps = true;
  std::printf("cpu-bench: %d threads, fast kernels %s\n", omp_get_max_threads(),
              cpu_fast_kernels_built() ? "built (oneDNN, OpenBLAS)" : "not built");
  if (ops) {
    bench_ops(o);
    bench_dropout(o);
  }
  if (steps) bench_steps(o);
  if (!o.json.empty()) write_file_atomic(o.json, g_rows.dump(2) + "\n");
  return 0;
}

}  // namespace
}  // namespace ddpm

int main(int argc, char** argv) {
  try {
    return ddpm::run(argc, argv);
  } catch (const ddpm::Error& e) {
    std::fprintf(stderr, "cpu-bench: error: %s\n", e.message().c_str());
    return 1;
  }
}
