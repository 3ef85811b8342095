// `ddpm eval`: the variational bound in bits/dim of a checkpoint on a data split.
// `ddpm export`: a data split written as the FID tools read it (the reference statistics'
// input; samples are exported by `ddpm sample --format`).
#include <algorithm>
#include <cstdio>

#include "apps/checkpoint_run.h"
#include "apps/commands.h"
#include "engine/file_io.h"
#include "models/config_reader.h"
#include "models/data/image_export.h"

namespace ddpm::app {
namespace {

int eval(int argc, char** argv) {
  const Args args(argc, argv,
                  {"ckpt", "split", "n", "timesteps", "batch", "seed", "variance", "device", "json"},
                  {"ema", "no-ema", "clip", "no-clip"});
  CHECK(!(args.has("ema") && args.has("no-ema")), "give --ema or --no-ema, not both");
  CHECK(!(args.has("clip") && args.has("no-clip")), "give --clip or --no-clip, not both");
  const std::string split = args.get("split", "test");
  CHECK(split == "test" || split == "train", "option '--split' must be test or train, got '" << split << "'");
  const std::string variance = args.get("variance", "");
  CHECK(variance.empty() || variance == "large" || variance == "small",
        "option '--variance' must be large (beta_t) or small (beta_tilde_t), got '" << variance << "'");
  CheckpointRun cr = open_checkpoint_run(args);
  ImageRun& run = *cr.run;
  const int T = run.config().trainer.schedule.T;
  LikelihoodConfig lc = run.likelihood_config();
  lc.timesteps = static_cast<int>(args.integer("timesteps", 0, 0, T - 1));
  lc.batch = args.integer("batch", 64, 1, 1'000'000);
  lc.seed = static_cast<uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  if (!variance.empty()) lc.fixed_large = variance == "large";
  if (args.has("clip") || args.has("no-clip")) lc.clip_x0 = args.has("clip");
  const bool ema = !args.has("no-ema");
  const std::shared_ptr<const ImageDataset> data = open_dataset(run.config(), split);
  const int64_t n = args.integer("n", data->size(), 1, data->size());
  const int terms = lc.timesteps == 0 ? T : lc.timesteps + 1;
  std::printf("bound on %lld %s images of %s: %d of the %d terms per image%s (%lld network "
              "evaluations), %s weights, target %s, variance %s, x0 %s\n",
              static_cast<long long>(n), split.c_str(), run.config().dataset.c_str(), terms, T,
              terms == T ? " (all)" : ": L_0 and K stratified", static_cast<long long>(n) * terms,
              ema ? "EMA" : "raw", target_name(lc.target), lc.fixed_large ? "large" : "small",
              lc.clip_x0 ? "clipped" : "not clipped");
  Progress bar("images", n);
  const LikelihoodResult r =
      run.likelihood(*data, n, lc, ema, [&](int64_t done, int64_t) { bar.update(done); });
  std::printf("bits/dim %.4f +- %.4f (standard error over images)\n"
              "  prior L_T %.4f, KL terms L_1..L_T-1 %.4f, decoder L_0 %.4f\n",
              r.bits_per_dim, r.standard_error, r.prior_bpd, r.kl_bpd, r.decoder_bpd);
  if (args.has("json")) {
    const nlohmann::json j = {{"checkpoint", args.get("ckpt", "")}, {"step", cr.info.step},
                              {"split", split}, {"images", n}, {"terms_per_image", r.terms_per_image},
                              {"T", T}, {"ema", ema}, {"target", target_name(lc.target)},
                              {"variance", lc.fixed_large ? "large" : "small"},
                              {"clip_x0", lc.clip_x0}, {"seed", lc.seed},
                              {"bits_per_dim", r.bits_per_dim},
                              {"standard_error", r.standard_error}, {"prior_bpd", r.prior_bpd},
                              {"kl_bpd", r.kl_bpd}, {"decoder_bpd", r.decoder_bpd}};
    write_file_atomic(args.get("json", ""), j.dump(2) + "\n");
  }
  return 0;
}

int export_split(int argc, char** argv) {
  const Args args(argc, argv, {"config", "split", "n", "format", "out"}, {}, {"set"});
  const std::string path = args.require("config"), out = args.require("out");
  nlohmann::json j = load_json_file(path);
  for (const std::string& s : args.all("set")) apply_override(j, s);
  const ImageTrainConfig c = read_image_train_config(j, path);
  const std::string split = args.get("split", "train");
  const std::shared_ptr<const ImageDataset> data = open_dataset(c, split);
  const int64_t n = args.integer("n", data->size(), 1, data->size());
  ImageWriter writer(out, parse_image_format(args.get("format", "npz")), n);
  Progress bar("images", n);
  for (int64_t first = 0; first < n; first += 1000) {
    writer.add(dataset_images(*data, first, std::min<int64_t>(1000, n - first)));
    bar.update(writer.written());
  }
  writer.finish();
  std::printf("wrote %s: %lld %s images of %s, %lldx%lld RGB\n", out.c_str(),
              static_cast<long long>(n), split.c_str(), c.dataset.c_str(),
              static_cast<long long>(data->height()), static_cast<long long>(data->width()));
  return 0;
}

}  // namespace

const Command kEval = {
    "eval",
    "usage: ddpm eval --ckpt FILE [--split test|train] [--n N] [--timesteps K] [--batch B]\n"
    "                 [--seed S] [--ema|--no-ema] [--variance large|small] [--clip|--no-clip]\n"
    "                 [--device cpu|cuda] [--json OUT]\n"
    "\n"
    "The DDPM variational bound on the negative log-likelihood, in bits/dim, on the first N\n"
    "images of a split (default: all of the test split): the prior term, the T-1 Gaussian KL\n"
    "terms and the discretized-Gaussian decoder over 256 levels, as Ho et al. report it. All T\n"
    "network terms per image by default; --timesteps K evaluates the decoder and estimates the\n"
    "KL terms' sum without bias from K stratified timesteps (K + 1 network calls per image;\n"
    "the standard error printed includes the strata's spread).\n"
    "Target, variance and clipping default to the checkpoint's config.",
    eval};

const Command kExport = {
    "export",
    "usage: ddpm export --config FILE [--split train|test] [--n N] [--format npz|png]\n"
    "                   --out FILE.npz|FOLDER [--set key=value ...]\n"
    "\n"
    "Writes a split of the config's dataset (default: all of train) as the FID tools read\n"
    "it: a .npz with arr_0 uint8 (N, H, W, 3), or a folder of PNGs. Compare it with samples\n"
    "exported by `ddpm sample --format` (README: Judging a model).",
    export_split};

}  // namespace ddpm::app
