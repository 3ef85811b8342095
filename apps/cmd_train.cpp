// `ddpm train`: a U-Net run (checkpoints, resume, signals) or a 2-D MLP run.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "apps/commands.h"
#include "engine/device.h"
#include "engine/distributed/world.h"
#include "models/config_reader.h"
#include "models/toy/toy_train.h"
#include "models/unet/image_train.h"

namespace ddpm::app {
namespace {

// SIGINT / SIGTERM: the first asks the run to finish its step, write a checkpoint and stop;
// a second ends the process at once (the last periodic checkpoint is intact: every file is
// written atomically). The exit status is the shell's for that signal, 128 + its number
// (130 for SIGINT, 143 for SIGTERM: what a batch scheduler sends before it kills a job).
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signals = 0, g_first_signal = 0;

void on_signal(int sig) {
  if (g_signals++ > 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_first_signal = sig;
  g_stop.store(true);
  const char msg[] =
      "\nddpm: stopping after this step with a checkpoint (signal again to quit at once)\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
}

std::string format_seconds(double s) {
  char buf[32];
  const long long t = static_cast<long long>(s);
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

// The top-level keys `--set` named: recipe changes a resumed run may make on purpose.
std::set<std::string> named_keys(const Args& args) {
  std::set<std::string> keys;
  for (const std::string& s : args.all("set")) keys.insert(s.substr(0, s.find_first_of("=.")));
  return keys;
}

int train_unet(const nlohmann::json& config, const std::string& path, const Args& args,
               const std::string& command) {
  const ImageTrainConfig c = read_image_train_config(config, path);
  Collective& world = open_world(c.device);
  const bool lead = world.rank() == 0;  // the one that prints; every rank trains
  if (!lead) (void)!std::freopen("/dev/null", "w", stdout);
  {
    ParameterStore probe;
    UNet net(probe, c.unet);
    std::printf("training the U-Net (%lld parameters) on %s data, %s: %lld steps of batch %lld\n",
                static_cast<long long>(probe.count()), c.dataset.c_str(), device_name(c.device),
                static_cast<long long>(c.trainer.steps), static_cast<long long>(c.batch_size));
    if (world.size() > 1)
      std::printf("data-parallel: %s, shards of %lld samples\n", world.describe().c_str(),
                  static_cast<long long>(c.micro_batch > 0 ? c.micro_batch : c.batch_size / world.size()));
  }
  TrainOptions o;
  o.world = &world;
  o.resume = args.get("resume", "");
  o.overwrite = args.has("overwrite");
  o.named = named_keys(args);
  o.stop = &g_stop;
  o.command = command;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const bool tty = isatty(fileno(stdout));
  const TrainSummary s = train_images(c, o, [&](const TrainProgress& p) {
    char quality[96] = "";
    if (p.quality >= 0)
      std::snprintf(quality, sizeof quality, "  valid %.0f%%  roughness %.1f", 100 * p.quality,
                    p.roughness);
    if (p.bits_per_dim >= 0)
      std::snprintf(quality, sizeof quality, "  test %.3f +- %.3f bits/dim", p.bits_per_dim,
                    p.bpd_standard_error);
    char work[160] = "";
    if (c.device == Device::CUDA)
      std::snprintf(work, sizeof work,
                    "  %llu launches %llu graphs %llu syncs %llu late reads/step",
                    static_cast<unsigned long long>(p.step_work.launches),
                    static_cast<unsigned long long>(p.step_work.graph_launches),
                    static_cast<unsigned long long>(p.step_work.host_syncs),
                    static_cast<unsigned long long>(p.step_work.late_reads));
    std::printf("%sstep %lld/%lld  loss %.4f  grad %.3f  lr %.2e  %.1f img/s  %.2f TFLOP/s%s"
                "  eta %s%s%s",
                tty ? "\r" : "", static_cast<long long>(p.step), static_cast<long long>(p.total),
                p.stats.loss, p.stats.grad_norm, p.stats.lr, p.images_per_second,
                p.matmul_tflops, work,
                format_seconds(p.eta_seconds).c_str(), quality, tty ? "   " : "\n");
    std::fflush(stdout);
  });
  if (tty) std::printf("\n");
  for (const std::string& note : s.notes) std::printf("%s\n", note.c_str());
  if (s.skipped_steps > 0)
    std::printf("skipped %lld steps whose loss or gradient was not finite\n",
                static_cast<long long>(s.skipped_steps));
  if (s.interrupted) {
    std::printf("interrupted after %lld steps; checkpoint: %s\nresume with: ddpm train --config "
                "%s --resume %s\n",
                static_cast<long long>(s.steps_trained), s.last_checkpoint.c_str(), path.c_str(),
                s.last_checkpoint.c_str());
    // (a data-parallel rank another rank's signal stopped has none of its own: SIGINT's)
    return 128 + (g_first_signal != 0 ? int(g_first_signal) : SIGINT);
  }
  std::printf("loss %.4f -> %.4f", s.first_loss, s.final_loss);
  if (s.untrained_quality >= 0)
    std::printf("\nsample quality, untrained -> trained: valid %.0f%% -> %.0f%%, roughness %.1f -> "
                "%.1f (the data: 100%% valid, roughness ~2)",
                100 * s.untrained_quality, 100 * s.final_quality, s.untrained_roughness,
                s.final_roughness);
  if (s.final_bits_per_dim >= 0)
    std::printf("\nbits/dim on the test split: %.3f +- %.3f (the variational bound on %lld "
                "images; %s)",
                s.final_bits_per_dim, s.final_bpd_standard_error,
                static_cast<long long>(c.eval_images),
                c.eval_timesteps == 0
                    ? "all T terms"
                    : ("L_0 and " + std::to_string(c.eval_timesteps) + " stratified KL terms each").c_str());
  if (c.device == Device::CUDA)
    std::printf("\npeak device memory: %.1f MiB",
                static_cast<double>(cuda_peak_bytes_in_use()) / (1 << 20));
  std::printf("\nsamples: %s\nlog: %s\ncheckpoint: %s\nreport: %s\n", s.samples_path.c_str(),
              s.log_path.c_str(), s.last_checkpoint.c_str(), s.report_path.c_str());
  return 0;
}

int train_toy(const nlohmann::json& config, const std::string& path) {
  const ToyConfig toy = read_toy_config(config, path);
  std::printf("training %s on %s: %lld steps, target %s, %s schedule, %s loss\n", "mlp2d",
              toy.dataset.c_str(), static_cast<long long>(toy.trainer.steps),
              target_name(toy.trainer.target), schedule_kind_name(toy.trainer.schedule.kind),
              loss_kind_name(toy.trainer.loss.kind));
  const ToyResult r = ddpm::train_toy(toy, true, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  std::printf(
      "done in %.1f s (%lld parameters): loss %.4f -> %.4f; sliced W1 to held-out data: "
      "samples %.4f, Gaussian noise %.4f, a second data set %.4f\n",
      r.seconds, static_cast<long long>(r.parameters), r.first_loss, r.final_loss, r.swd_samples,
      r.swd_noise, r.swd_data);
  std::printf("wrote %s/{samples.csv, plot.png, metrics.jsonl, summary.json}\n",
              toy.out_dir.c_str());
  return 0;
}

int run(int argc, char** argv) {
  const Args args(argc, argv, {"config", "resume"}, {"overwrite"}, {"set"});
  const std::string path = args.require("config");
  nlohmann::json config = load_json_file(path);
  for (const std::string& s : args.all("set")) apply_override(config, s);
  CHECK(config.is_object() && config.contains("model") && config["model"].is_string(),
        path << ": needs a \"model\" key (unet or mlp2d)");
  CHECK(!(args.has("resume") && args.has("overwrite")),
        "--resume continues the run in out_dir and --overwrite replaces it: give one");
  std::string command = "ddpm train";
  for (int i = 0; i < argc; ++i) command += std::string(" ") + argv[i];
  if (config["model"] == "unet") return train_unet(config, path, args, command);
  CHECK(!args.has("resume") && !args.has("overwrite"), "--resume and --overwrite are for U-Net runs");
  return train_toy(config, path);
}

}  // namespace

const Command kTrain = {
    "train",
    "usage: ddpm train --config FILE [--set key=value ...] [--resume CKPT|latest] [--overwrite]\n"
    "\n"
    "Trains the model a config describes (configs/*.json; `ddpm config --config FILE` lists\n"
    "every key). A U-Net run writes to its out_dir: config.json, run.json, metrics.jsonl,\n"
    "samples/, ckpt/step_N.safetensors and, at the end, report.html (see ddpm report).\n"
    "A new run refuses an out_dir that holds a run; --overwrite replaces it. --resume\n"
    "continues a checkpoint exactly (latest: the newest in out_dir); checkpoints after it are\n"
    "moved to ckpt/abandoned/. On resume the model may not change, and the recipe (lr,\n"
    "target, schedule, seed, ...) only for keys named with --set.\n"
    "Ctrl-C (SIGINT or SIGTERM) finishes the step, writes a checkpoint and says how to\n"
    "resume; a second one quits at once. A step whose loss is NaN or infinite stops the run\n"
    "before the update is applied (\"nonfinite\": \"skip\" goes on instead).\n"
    "Data-parallel: mpirun -np N ddpm train ... runs N ranks (one GPU each, or a share of the\n"
    "cores); rank 0 prints and writes the folder. Each step's batch is cut into shards of\n"
    "micro_batch samples (default batch_size / N); the same micro_batch gives the same bits\n"
    "on any number of ranks (docs/distributed.md).",
    run};

}  // namespace ddpm::app
