// kernel-bench: the CUDA kernels at the CIFAR-10 model's real shapes (batch 128), next to
// cuDNN / cuBLAS, and the fused diffusion loss against its unfused chain.
//
//   kernel-bench [all|conv|memory|attention|loss|linear|gemm|step]... [--json FILE] [--batch N]
//                [--skip-naive] [--smoke] [--only-sm90 | --without-sm90]
//
// --only-sm90, --without-sm90: only the rows on Hopper's wgmma and TMA kernels (convolution
// v5, the wgmma GEMM, the step on v5), or all but them (apps/bench/bench.h: Sm90Rows).
//
// --smoke: one run per row (its time not worth reading), and small shapes where a section
// has them (conv, attention, loss): checks that every row runs before a GPU session spends
// its minutes on it.
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
// the end). Without a GPU it says so and exits 0. A section that fails is named (stderr,
// and "failed_sections" in the JSON) and the others still run; the exit status is then 1.
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/device.h"

#if DDPM_WITH_CUDA
#include "apps/bench/bench.h"

namespace ddpm::bench {
namespace {

int run(int argc, char** argv) {
  const std::vector<Section> all = {
      {"conv", bench_convolutions}, {"memory", bench_memory_bound}, {"attention", bench_attention},
      {"loss", bench_loss},         {"linear", bench_linear},       {"gemm", bench_gemm},
      {"step", bench_training_step}};
  std::string names = "all";
  for (const Section& s : all) names += std::string(" ") + s.name;
  auto is_section = [&](const char* name) {
    for (const Section& s : all)
      if (!std::strcmp(s.name, name)) return true;
    return false;
  };
  std::string json_path;
  Options o;
  std::set<std::string> named;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) o.batch = std::stoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--skip-naive")) o.skip_naive = true;
    else if (!std::strcmp(argv[i], "--smoke")) o.smoke = true;
    else if (!std::strcmp(argv[i], "--only-sm90")) o.sm90 = Sm90Rows::Only;
    else if (!std::strcmp(argv[i], "--without-sm90")) o.sm90 = Sm90Rows::Without;
    else if (!std::strcmp(argv[i], "all") || is_section(argv[i])) named.insert(argv[i]);
    else
      THROW_ERROR("kernel-bench: unknown argument '" << argv[i] << "' (sections: " << names
                                                      << "; options: --json FILE, --batch N, "
                                                         "--skip-naive, --smoke, --only-sm90, "
                                                         "--without-sm90)");
  }
  std::vector<Section> chosen;  // in the order above
  for (const Section& s : all)
    if (named.empty() || named.count("all") || named.count(s.name)) chosen.push_back(s);
  const Peaks peaks = device_peaks();
  std::printf("device: %s  peaks: fp32 %.1f, TF32 %.0f, bf16 %.0f TFLOP/s (dense)  bandwidth "
              "%.0f GB/s  L2 %.0f MiB  batch %lld\n",
              peaks.name.c_str(), peaks.fp32_tflops, peaks.tf32_tflops, peaks.bf16_tflops,
              peaks.bandwidth_gbs, peaks.l2_bytes / 1048576.0, static_cast<long long>(o.batch));
  Timer timer(peaks.l2_bytes, o.smoke);
  Report report(peaks);
  return run_sections(chosen, o, timer, report, json_path) ? 0 : 1;
}

}  // namespace
}  // namespace ddpm::bench
#endif

int main(int argc, char** argv) {
  if (!ddpm::cuda_available()) {
    std::printf("kernel-bench: no GPU to measure (%s); nothing to do\n",
                ddpm::cuda_unavailable_reason().c_str());
    return 0;
  }
#if DDPM_WITH_CUDA
  try {
    return ddpm::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel-bench: error: %s\n", e.what());
    return 1;
  }
#else
  (void)argc;
  (void)argv;
  return 0;
#endif
}
