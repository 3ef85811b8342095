// `ddpm sample`: samples of a checkpoint as a PNG grid (plain, progressive, interpolated),
// or N of them exported for the FID tools (--format npz|png).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "apps/checkpoint_run.h"
#include "apps/commands.h"
#include "engine/device.h"
#include "engine/op_profile.h"
#include "engine/ops.h"
#include "models/data/image_export.h"
#include "models/ddpm/sampler.h"
#include "models/unet/image_train.h"

namespace ddpm::app {
namespace {

// The output is checked before any sampling: a minutes-long run must not end in "cannot
// create" because of a typo.
void check_output(const std::string& out) {
  const std::filesystem::path p(out);
  CHECK(p.extension() == ".png", "option '--out' must name a .png file, got '" << out << "'");
  const std::filesystem::path dir = p.parent_path().empty() ? "." : p.parent_path();
  CHECK(std::filesystem::is_directory(dir),
        "option '--out': the folder '" << dir.string() << "' does not exist");
  CHECK(::access(dir.c_str(), W_OK) == 0,
        "option '--out': the folder '" << dir.string() << "' is not writable");
}

// N samples in batches of B into the FID tools' format; batch b uses seed + b 2^32.
void export_samples(ImageRun& run, const SamplerConfig& sc, int64_t n, int64_t batch,
                    uint64_t seed, bool ema, ImageFormat format, const std::string& out) {
  ImageWriter writer(out, format, n);  // checks the destination before any sampling
  Progress bar("samples", n);
  for (int64_t b = 0; writer.written() < n; ++b) {
    const int64_t count = std::min(batch, n - writer.written());
    writer.add(run.sample(count, seed + (static_cast<uint64_t>(b) << 32), sc, ema).x0);
    bar.update(writer.written());
  }
  writer.finish();
  std::printf("wrote %s: %lld samples, uint8 RGB (%s weights)\n", out.c_str(),
              static_cast<long long>(n), ema ? "EMA" : "raw");
}

int run(int argc, char** argv) {
  const Args args(argc, argv,
                  {"ckpt", "out", "n", "sampler", "steps", "eta", "seed", "device", "precision",
                   "cuda-conv", "format", "batch"},
                  {"ema", "no-ema", "progressive", "interpolate", "profile", "graph",
                   "no-warmup"});
  const std::string out = args.require("out");
  const std::string format = args.get("format", "grid");
  CHECK(!(args.has("ema") && args.has("no-ema")), "give --ema or --no-ema, not both");
  CHECK(!(args.has("progressive") && args.has("interpolate")),
        "give --progressive or --interpolate, not both");
  CHECK(format == "grid" || !(args.has("progressive") || args.has("interpolate")),
        "--progressive and --interpolate write a grid; not with --format " << format);
  if (format == "grid") check_output(out);
  else parse_image_format(format);  // names a bad format before the checkpoint is read
  CheckpointRun cr = open_checkpoint_run(args);
  ImageRun& run = *cr.run;
  const CheckpointInfo& info = cr.info;
  const ImageTrainConfig& c = run.config();
  SamplerConfig sc = c.sampler;
  if (args.has("sampler")) sc.kind = parse_sampler_kind(args.get("sampler", ""));
  sc.steps = static_cast<int>(args.integer("steps", sc.steps, 0, c.trainer.schedule.T));
  sc.eta = args.number("eta", sc.eta, 0, 10);  // the config key's range
  sc.cuda_graph = sc.cuda_graph || args.has("graph");
  CHECK(!(args.has("profile") && sc.cuda_graph),
        "--profile times ops one by one, which a CUDA graph's replay does not launch: give "
        "--profile or --graph (or cuda_graph in the run's config), not both");
  const int64_t n = args.integer("n", 64, 1, format == "grid" ? 100'000 : 10'000'000);
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  const bool ema = !args.has("no-ema");
  const int64_t s = c.unet.image_size, ch = c.unet.in_channels;
  if (format != "grid") {
    export_samples(run, sc, n, args.integer("batch", 256, 1, 1'000'000), seed, ema,
                   parse_image_format(format), out);
  } else if (args.has("progressive")) {
    std::vector<int> t;
    write_image_grid(out, run.progressive(n, seed, sc, ema, &t), 10);
    std::printf("wrote %s: %lld rows of predicted x0 at 10 steps, t = %d .. %d\n", out.c_str(),
                static_cast<long long>(n), t.front(), t.back());
  } else if (args.has("interpolate")) {
    // Spherical interpolation between two noises, decoded with deterministic DDIM.
    sc.kind = SamplerKind::Ddim;
    sc.eta = 0;
    const Tensor start =
        slerp(randn(Shape{1, s, s, ch}, seed, 1), randn(Shape{1, s, s, ch}, seed, 2), n).to(c.device);
    write_image_grid(out, run.sample(n, seed, sc, ema, start).x0, n);
    std::printf("wrote %s: %lld images along a slerp between two noises\n", out.c_str(),
                static_cast<long long>(n));
  } else {
    // Timed: the sampling loop from queueing to the last step done (device_synchronize), and
    // what it asked of the GPU per denoising step (the figure issue 15's sampling goal is in).
    const int steps = sc.steps > 0 ? sc.steps : c.trainer.schedule.T;
    // --profile: the time of every op of the loop (engine/op_profile.h), per step: the GPU's
    // on CUDA, the CPU's wall clock on the CPU
    const bool profile = args.has("profile");
    if (args.has("graph") && c.device != Device::CUDA)
      std::printf("--graph captures GPU work; sampling on %s: eager steps\n",
                  device_name(c.device));
    // First an untimed loop of 2 steps (--no-warmup: time the first use too). The first call
    // of each shape builds what later calls reuse: oneDNN's JIT GEMM kernels and convolution
    // plans on the CPU (25 ms for the fashion model's 16 x 32 -> 128 time-embedding GEMM, half
    // a millisecond of each of 50 DDIM steps), cuDNN's plans, cuBLAS's handles and the
    // autotuner's choices on a GPU. That is the process's cost, not a denoising step's; and
    // PyTorch's sampling figure (scripts/pytorch_reference.py) is timed after a warm-up too.
    if (!args.has("no-warmup")) {
      SamplerConfig warm = sc;
      warm.steps = std::min(2, steps);
      const auto warm_start = std::chrono::steady_clock::now();
      run.sample(n, seed, warm, ema);
      device_synchronize(c.device);
      std::printf("warm-up: %d steps in %.3f s, not timed below (--no-warmup times the first "
                  "use too)\n", warm.steps,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - warm_start)
                      .count());
    }
    set_op_profiling(profile);
    const DeviceWorkCounts before = device_work_counts();
    const auto start = std::chrono::steady_clock::now();
    const Tensor x0 = run.sample(n, seed, sc, ema).x0;
    const DeviceWorkCounts after = device_work_counts();  // before the wait that ends the timing
    device_synchronize(c.device);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("sampled %lld images in %d %s steps on %s (%s products, %s activations): %.3f s, "
                "%.3f ms per step; per step %.1f launches, %.2f graph launches, %.2f host syncs\n",
                static_cast<long long>(n), steps, sc.kind == SamplerKind::Ddpm ? "DDPM" : "DDIM",
                device_name(c.device),
                c.precision == Precision::BF16   ? "bf16"
                : c.precision == Precision::TF32 ? "tf32"
                                                 : "fp32",
                c.activations == DType::BF16 ? "bf16" : "fp32", seconds, 1e3 * seconds / steps,
                double(after.launches - before.launches) / steps,
                double(after.graph_launches - before.graph_launches) / steps,
                double(after.host_syncs - before.host_syncs) / steps);
    if (profile) {
      set_op_profiling(false);
      const std::vector<OpTime> times = op_profile_take();
      const bool cpu = c.device != Device::CUDA;
      std::printf("op profile of the sampling loop (%s time per denoising step):\n%s",
                  cpu ? "CPU" : "GPU", format_op_profile(times, steps).c_str());
      if (cpu) {  // the CPU's ops run as they are called: the loop's time is theirs and the host's
        double ops_ms = 0;
        for (const OpTime& t : times) ops_ms += t.ms;
        std::printf("%.1f%% of the loop's wall clock in the ops above (the rest: the host's work "
                    "between them)\n", seconds > 0 ? 100 * ops_ms / (1e3 * seconds) : 0.0);
      }
    }
    write_image_grid(out, x0, 8);
    std::printf("wrote %s: %lld samples (%s weights, step %lld)\n", out.c_str(),
                static_cast<long long>(n), ema ? "EMA" : "raw", static_cast<long long>(info.step));
  }
  return 0;
}

}  // namespace

const Command kSample = {
    "sample",
    "usage: ddpm sample --ckpt FILE --out FILE.png [--n N] [--sampler ddpm|ddim] [--steps K]\n"
    "                   [--eta E] [--ema|--no-ema] [--seed S] [--device cpu|cuda]\n"
    "                   [--precision fp32|tf32|bf16] [--cuda-conv ALGORITHM]\n"
    "                   [--progressive | --interpolate] [--profile | --graph] [--no-warmup]\n"
    "       ddpm sample --ckpt FILE --format npz|png --out FILE.npz|FOLDER --n N [--batch B] ...\n"
    "\n"
    "Draws N samples (default 64) from a checkpoint with its config's sampler, or the one\n"
    "given: --steps K respaces to K steps (0: all T), --eta is DDIM's noise. EMA weights by\n"
    "default. --progressive writes each sample's predicted x0 at 10 steps from noise to the\n"
    "end; --interpolate decodes N noises along a slerp between two with deterministic DDIM.\n"
    "A plain grid is timed: seconds, ms per step, launches and host syncs per step, after an\n"
    "untimed loop of 2 steps that pays for the first use of each shape (--no-warmup: time it\n"
    "too); with --profile also the time of every op per step: the GPU's (CUDA events), or on\n"
    "the CPU its wall clock (each op's own, the ops it calls apart).\n"
    "--graph (CUDA; also the run's cuda_graph key) captures the denoising step as one CUDA\n"
    "graph after one eager step and replays it: the same samples, one launch per step.\n"
    "--precision and --cuda-conv (the config's cuda_conv values: auto times ours against\n"
    "cuDNN per layer) change how the products run, not what the checkpoint learnt.\n"
    "--format exports N samples (e.g. 50000) for the FID tools instead of a grid, B at a time\n"
    "(default 256): npz (arr_0, uint8 N x H x W x 3) or a new folder of PNGs.",
    run};

}  // namespace ddpm::app
