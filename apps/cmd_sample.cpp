// `ddpm sample`: samples of a checkpoint as a PNG grid (plain, progressive, interpolated).
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "apps/commands.h"
#include "engine/ops.h"
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

int run(int argc, char** argv) {
  const Args args(argc, argv, {"ckpt", "out", "n", "sampler", "steps", "eta", "seed", "device"},
                  {"ema", "no-ema", "progressive", "interpolate"});
  const std::string ckpt = args.require("ckpt"), out = args.require("out");
  CHECK(!(args.has("ema") && args.has("no-ema")), "give --ema or --no-ema, not both");
  CHECK(!(args.has("progressive") && args.has("interpolate")),
        "give --progressive or --interpolate, not both");
  check_output(out);
  const CheckpointInfo info = read_checkpoint_info(ckpt);
  ImageTrainConfig c = read_image_train_config(info.config, ckpt + " (stored config)");
  if (args.has("device")) {
    const std::string d = args.get("device", "");
    CHECK(d == "cpu" || d == "cuda", "option '--device' must be cpu or cuda, got '" << d << "'");
    c.device = d == "cuda" ? Device::CUDA : Device::CPU;
  }
  ImageRun run(c, /*with_data=*/false);
  run.load_checkpoint(ckpt);
  SamplerConfig sc = c.sampler;
  if (args.has("sampler")) sc.kind = parse_sampler_kind(args.get("sampler", ""));
  sc.steps = static_cast<int>(args.integer("steps", sc.steps, 0, c.trainer.schedule.T));
  sc.eta = args.number("eta", sc.eta);
  const int64_t n = args.integer("n", 64, 1, 100000);
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  const bool ema = !args.has("no-ema");
  const int64_t s = c.unet.image_size, ch = c.unet.in_channels;
  if (args.has("progressive")) {
    const int K = sc.steps == 0 ? c.trainer.schedule.T : sc.steps;
    for (int k = 0; k < 10; ++k) sc.record.push_back(K - 1 - k * (K - 1) / 9);
    const SampleResult r = run.sample(n, seed, sc, ema);
    std::vector<float> grid;  // row i: sample i's predicted x0 at the recorded steps
    const int64_t px = s * s * ch;
    for (int64_t i = 0; i < n; ++i)
      for (const auto& [t, x0] : r.progress) {
        const std::vector<float> v = x0.to(Device::CPU).to_vector<float>();
        grid.insert(grid.end(), v.begin() + i * px, v.begin() + (i + 1) * px);
      }
    write_image_grid(out, Tensor::from_vector(Shape{n * 10, s, s, ch}, grid), 10);
    std::printf("wrote %s: %lld rows of predicted x0 at 10 steps, t = %d .. %d\n", out.c_str(),
                static_cast<long long>(n), r.progress.front().first, r.progress.back().first);
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
    write_image_grid(out, run.sample(n, seed, sc, ema).x0, 8);
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
    "                   [--progressive | --interpolate]\n"
    "\n"
    "Draws N samples (default 64) from a checkpoint with its config's sampler, or the one\n"
    "given: --steps K respaces to K steps (0: all T), --eta is DDIM's noise. EMA weights by\n"
    "default. --progressive writes each sample's predicted x0 at 10 steps from noise to the\n"
    "end; --interpolate decodes N noises along a slerp between two with deterministic DDIM.",
    run};

}  // namespace ddpm::app
