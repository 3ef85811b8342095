// kernel-bench: the CUDA kernels at the CIFAR-10 model's real shapes (batch 128), next to
// cuDNN / cuBLAS, and the fused diffusion loss against its unfused chain.
//
//   kernel-bench [all|conv|memory|attention|loss|linear|gemm|step]... [--json FILE] [--batch N]
//                [--skip-naive] [--smoke] [--once] [--only-sm90 | --without-sm90]
//
// --only-sm90, --without-sm90: only the rows on Hopper's wgmma and TMA kernels (convolution
// v5, the wgmma GEMM, the step on v5), or all but them (apps/bench/bench.h: Sm90Rows).
//
// --smoke: one run per row (its time not worth reading), and small shapes where a section
// has them (conv, attention, loss): checks that every row runs before a GPU session spends
// its minutes on it.
//
// --once: every row's function runs once, untimed warm-ups skipped, at the real shapes: for
// a profiler, which then sees one launch per row (scripts/gpu-check.sh's profile stage runs
// Nsight Compute on the conv section so; the conv section names each layer's rows with an
// NVTX range, "conv <layer>", to select them by). Its times are one run's: not figures.
//
// Sections (apps/bench/): conv (both versions vs cuDNN, TFLOP/s), memory (group norm, SiLU,
// upsample, GB/s), attention (straightforward vs fused vs a cuBLAS GEMM floor, TFLOP/s),
// loss (fused corrupt / loss vs the unfused chain at 128x32x32x3 and 64x256x256x3: time,
// launches, bytes, GB/s, fraction of peak bandwidth), linear (the model's linear layers in
// fp32, TF32 and bf16 through cuBLAS, TFLOP/s), gemm (the Hopper wgmma GEMM against
// cuBLAS's bf16 GEMM at the convolutions' sizes, TFLOP/s), step (the whole training step, eager and as
// one CUDA graph, fp32 and bf16: ms, img/s, launches). Timing method: apps/bench/bench.h.
// Output: a table, and JSON with --json, both as each section finishes (a run stopped at a
// time limit keeps the sections it finished; "complete" in the JSON says whether it ran to
// the end). Without a GPU it says so and exits 0 (a bad command line is refused first, exit
// 2). A section that fails is named (stderr, and "failed_sections" in the JSON) and the
// others still run; the exit status is then 1.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "apps/args.h"
#include "engine/check.h"
#include "engine/device.h"

namespace {

// The sections, in the order they run.
const char* const kSections[] = {"conv", "memory", "attention", "loss", "linear", "gemm", "step"};

// The command line, read before anything needs a GPU, so that a bad one is refused on any
// machine.
struct Command {
  std::set<std::string> sections;  // named ones ("all" or none: every one)
  std::string json_path;
  int64_t batch = 128;
  bool skip_naive = false, smoke = false, once = false, only_sm90 = false, without_sm90 = false;
};

Command parse(int argc, char** argv) {
  std::vector<std::string> words;
  const ddpm::app::Args args(argc - 1, argv + 1, {"json", "batch"},
                             {"skip-naive", "smoke", "once", "only-sm90", "without-sm90"}, {},
                             &words);
  Command a;
  for (const std::string& w : words) {
    CHECK(w == "all" || std::find(std::begin(kSections), std::end(kSections), w) !=
                            std::end(kSections),
          "unknown section '" << w << "'");
    a.sections.insert(w);
  }
  a.json_path = args.get("json", "");
  a.batch = args.integer("batch", a.batch, 1, int64_t{1} << 20);
  a.skip_naive = args.has("skip-naive");
  a.smoke = args.has("smoke");
  a.once = args.has("once");
  a.only_sm90 = args.has("only-sm90");
  a.without_sm90 = args.has("without-sm90");
  CHECK(!(a.only_sm90 && a.without_sm90),
        "--only-sm90 and --without-sm90 exclude each other (the first keeps only the rows on "
        "Hopper's kernels, the second drops them)");
  return a;
}

}  // namespace

#if DDPM_WITH_CUDA
#include "apps/bench/bench.h"

namespace ddpm::bench {
namespace {

using SectionRun = void (*)(const Options&, Timer&, Report&);
// kSections' functions, in its order
const SectionRun kRuns[] = {bench_convolutions, bench_memory_bound, bench_attention, bench_loss,
                            bench_linear,       bench_gemm,         bench_training_step};
static_assert(std::size(kRuns) == std::size(kSections), "a function per section");

int run(const Command& a) {
  std::vector<Section> chosen;  // in the order above
  for (size_t i = 0; i < std::size(kSections); ++i)
    if (a.sections.empty() || a.sections.count("all") || a.sections.count(kSections[i]))
      chosen.push_back({kSections[i], kRuns[i]});
  Options o;
  o.batch = a.batch;
  o.skip_naive = a.skip_naive;
  o.smoke = a.smoke;
  o.sm90 = a.only_sm90 ? Sm90Rows::Only : a.without_sm90 ? Sm90Rows::Without : Sm90Rows::Both;
  const Peaks peaks = device_peaks();
  std::printf("device: %s  peaks: fp32 %.1f, TF32 %.0f, bf16 %.0f TFLOP/s (dense)  bandwidth "
              "%.0f GB/s  L2 %.0f MiB  batch %lld\n",
              peaks.name.c_str(), peaks.fp32_tflops, peaks.tf32_tflops, peaks.bf16_tflops,
              peaks.bandwidth_gbs, peaks.l2_bytes / 1048576.0, static_cast<long long>(o.batch));
  Timer timer(peaks.l2_bytes, o.smoke || a.once);  // one run per row
  Report report(peaks);
  return run_sections(chosen, o, timer, report, a.json_path) ? 0 : 1;
}

}  // namespace
}  // namespace ddpm::bench
#endif

int main(int argc, char** argv) {
  Command command;
  try {
    command = parse(argc, argv);
  } catch (const ddpm::Error& e) {  // the message alone, as ddpm prints one
    std::string sections = "all";
    for (const char* s : kSections) sections += std::string(" ") + s;
    std::fprintf(stderr,
                 "kernel-bench: %s\nusage: kernel-bench [SECTION]... [--json FILE] [--batch N] "
                 "[--skip-naive] [--smoke] [--once] [--only-sm90 | --without-sm90]; sections: %s\n",
                 e.message().c_str(), sections.c_str());
    return 2;
  }
  if (!ddpm::cuda_available()) {
    std::printf("kernel-bench: no GPU to measure (%s); nothing to do\n",
                ddpm::cuda_unavailable_reason().c_str());
    return 0;
  }
#if DDPM_WITH_CUDA
  try {
    return ddpm::bench::run(command);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel-bench: error: %s\n", e.what());
    return 1;
  }
#else
  return 0;
#endif
}
