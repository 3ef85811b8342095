#include "models/unet/image_train.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>

#include "engine/file_io.h"
#include "engine/op_profile.h"
#include "models/data/synthetic_images.h"
#include "models/run_folder.h"
#include "models/run_report.h"

namespace ddpm {

namespace {

constexpr uint64_t kSampleSeedOffset = 0x5A4D;  // sampling seed = run seed + this

// What the run computes on: the GPU's description, or the CPU's model, threads and kernels.
std::string describe_device(const ImageTrainConfig& c) {
  if (c.device == Device::CUDA) return cuda_device_description();
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      model = line.substr(line.find(':') + 2);
      break;
    }
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;  // built without OpenMP (the CUDA emulation's builds)
#endif
  return "CPU: " + model + ", " + std::to_string(threads) + " threads, " +
         (c.cpu_kernels == CpuKernels::Fast ? "fast" : "reference") + " kernels";
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

// The run's starting point: a fresh folder, or a checkpoint resumed (its config compared
// with this one's, later checkpoints set aside).
std::string start_run(ImageRun& run, RunFolder& folder, const TrainOptions& o, TrainSummary& summary) {
  const ImageTrainConfig& c = run.config();
  if (o.resume.empty()) {
    const std::string earlier = folder.describe_run();
    CHECK(earlier.empty() || o.overwrite,
          "'" << folder.path() << "' already holds a run (" << earlier
              << "): resume it with --resume latest, start over with --overwrite, or set "
                 "another out_dir");
    if (!earlier.empty()) {
      folder.clear_run();
      summary.notes.push_back("overwrote the earlier run in " + folder.path() + " (" + earlier + ")");
    }
    return "";
  }
  const std::string path = o.resume == "latest" ? latest_checkpoint(folder.path()) : o.resume;
  const CheckpointInfo info = read_checkpoint_info(path);
  const ImageTrainConfig stored =
      read_image_train_config(info.config, "checkpoint '" + path + "' (its config)");
  for (const ConfigChange& ch : compare_for_resume(stored, c, o.named, path))
    summary.notes.push_back("config change on resume: " + ch.key + " " + json_text(ch.from) +
                            " -> " + json_text(ch.to));
  CHECK(info.step < c.trainer.steps,
        "checkpoint '" << path << "' is at step " << info.step << " and the config's 'steps' is "
                       << c.trainer.steps << ": nothing to train (raise it, e.g. --set steps="
                       << 2 * std::max<int64_t>(info.step, 1) << ")");
  run.load_checkpoint(path);
  for (const std::string& m : folder.set_aside_after(run.step_index()))
    summary.notes.push_back("set aside (after the resumed step): " + m);
  summary.notes.push_back("resumed " + path + " at step " + std::to_string(run.step_index()));
  return path;
}

// Every rank must train the same recipe: the ranks' resolved configs compared key by key,
// each difference named ("rank 1 has seed 1, rank 0 has 0"), the same error on every rank.
void check_ranks_share_config(Collective& world, const nlohmann::json& resolved) {
  const std::vector<std::string> all = world.all_gather_text(resolved.dump());
  const nlohmann::json first = nlohmann::json::parse(all[0]);  // rank 0's, seen by every rank
  std::string differences;
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    for (const auto& [key, value] : first.items()) {
      const nlohmann::json theirs = other.contains(key) ? other[key] : nlohmann::json();
      if (theirs != value)
        differences += (differences.empty() ? "" : ", ") + ("rank " + std::to_string(r) + " has " +
                       key + " " + json_text(theirs) + ", rank 0 has " + json_text(value));
    }
  }
  CHECK(differences.empty(), "the " << world.size() << " ranks disagree on the resolved config ("
                                    << differences
                                    << "): every rank must be started with the same config");
}

// A signal reaches mpirun's ranks at different steps: they stop together, at the first
// step after which any rank has been asked to.
bool any_rank_asks_to_stop(const TrainOptions& o, Collective* world) {
  const double mine = o.stop != nullptr && o.stop->load() ? 1.0 : 0.0;
  if (world == nullptr || world->size() == 1) return mine > 0;
  for (double v : world->all_gather({mine}))
    if (v > 0) return true;
  return false;
}

// Ranks other than 0: the same steps (and the same non-finite stop), no files.
TrainSummary train_steps_only(ImageRun& run, const TrainOptions& o, Collective& world) {
  TrainSummary summary;
  const int64_t first = run.step_index(), total = run.config().trainer.steps;
  while (run.step_index() < total) {
    const StepStats st = run.step();
    const bool stop = any_rank_asks_to_stop(o, &world);
    if (!st.applied) {
      ++summary.skipped_steps;
      CHECK(run.config().trainer.skip_nonfinite,
            "rank " << world.rank() << ", step " << run.step_index()
                    << ": a non-finite loss or gradient norm (rank 0 says more)");
    }
    if (stop && run.step_index() < total) {
      summary.interrupted = true;
      break;
    }
  }
  summary.steps_trained = run.step_index() - first;
  return summary;
}

// profile_steps: the op profile (engine/op_profile.h) of the steps queued in
// [from, from + count), taken once they are all queued (one wait for the GPU, between steps).
// On the CPU, whose steps run as they are queued, the window's wall clock too: what the ops
// leave of it is the host's own work between them (the batch, the tape, logging).
class OpProfileWindow {
 public:
  OpProfileWindow(int64_t from, int64_t count, bool cpu) : from_(from), count_(count), cpu_(cpu) {}
  // Before step `step` is queued; returns the profile when the window closes here.
  std::string before_queue(int64_t step) {
    std::string done;
    if (started_ >= 0 && step == started_ + count_) done = finish(step);
    if (count_ > 0 && step == from_) {
      set_op_profiling(true);
      started_ = step;
      start_ = std::chrono::steady_clock::now();
    }
    return done;
  }
  // After the last step: the profile of a window the run ended inside, if any.
  std::string finish(int64_t step) {
    if (started_ < 0 || step == started_) return "";
    set_op_profiling(false);
    const double wall_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
            .count();
    const int64_t steps = step - started_;
    started_ = -1;
    const std::vector<OpTime> times = op_profile_take();
    std::string text = "op profile of steps " + std::to_string(step - steps + 1) + "-" +
                       std::to_string(step) + (cpu_ ? " (CPU" : " (GPU") +
                       " time per step):\n" + format_op_profile(times, steps);
    if (cpu_) {
      double ops_ms = 0;
      for (const OpTime& t : times) ops_ms += t.ms;
      char line[200];
      std::snprintf(line, sizeof line,
                    "wall clock of the steps: %.3f ms per step, %.1f%% of it in the ops above "
                    "(the rest: the host's work between them)\n",
                    wall_ms / steps, wall_ms > 0 ? 100 * ops_ms / wall_ms : 0.0);
      text += line;
    }
    return text;
  }

 private:
  int64_t from_, count_, started_ = -1;
  bool cpu_;
  std::chrono::steady_clock::time_point start_;
};

// The logged interval's loss per tenth of [0, T): metrics.jsonl's loss_by_t.
class LossByTime {
 public:
  explicit LossByTime(int timesteps) : timesteps_(timesteps) {}
  void add(const StepStats& s) {
    for (size_t i = 0; i < s.timesteps.size() && i < s.per_sample_loss.size(); ++i) {
      const int b = s.timesteps[i] * kBuckets / timesteps_;
      sum_[b] += s.per_sample_loss[i];
      ++count_[b];
    }
  }
  // The interval's means (null for a tenth no sample fell in); the next interval starts.
  nlohmann::json take() {
    nlohmann::json by_t = nlohmann::json::array();
    for (int b = 0; b < kBuckets; ++b) {
      by_t.push_back(count_[b] ? nlohmann::json(sum_[b] / count_[b]) : nlohmann::json());
      sum_[b] = 0;
      count_[b] = 0;
    }
    return by_t;
  }

 private:
  static constexpr int kBuckets = 10;
  int timesteps_;
  double sum_[kBuckets] = {};
  int64_t count_[kBuckets] = {};
};

// Rank 0's loop (the only one in one process): the steps queued and resolved, and what the
// host does with each resolved step: check it, log it, checkpoint, sample, evaluate.
class TrainLoop {
 public:
  using Report = std::function<void(const TrainProgress&)>;
  TrainLoop(ImageRun& run, RunFolder& folder, const TrainOptions& o, TrainSummary& summary,
            const Report& report)
      : run_(run), folder_(folder), o_(o), summary_(summary), report_(report), c_(run.config()),
        sample_seed_(c_.trainer.seed + kSampleSeedOffset), first_(run.step_index()),
        total_(c_.trainer.steps), loss_by_t_(c_.trainer.schedule.T),
        profile_(first_ + 2, c_.profile_steps, c_.device != Device::CUDA) {}

  // Every step to 'steps', or to a stop.
  void train();
  // After the steps: the progressive-generation strip, the report, the loss summary.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  bool weights_needed_after(int64_t done) const;  // done: steps completed
  void handle(const StepStats& stats, const DeviceWorkCounts& work);
  void count(const TrainProgress& p);
  void measure_rate(TrainProgress& p, Clock::time_point now, double secs) const;
  void write_outputs(TrainProgress& p, bool last, bool stopping);
  void log(const TrainProgress& p, double secs);
  void write_samples(const std::string& name, TrainProgress& p);
  void evaluate(TrainProgress& p);
  void write_profile(const std::string& text);

  ImageRun& run_;
  RunFolder& folder_;
  const TrainOptions& o_;
  TrainSummary& summary_;
  const Report& report_;
  const ImageTrainConfig& c_;
  const uint64_t sample_seed_;
  const int64_t first_, total_;
  std::shared_ptr<const ImageDataset> test_split_;  // opened at the first evaluation
  LossByTime loss_by_t_;
  std::vector<double> losses_;  // of every applied step: the summary's first and last tenth
  Clock::time_point start_, last_report_;
  // The rate counts the steps queued since the last report: queueing is where a CPU step
  // runs (and a GPU step's work enters the queue), so each interval holds the steps queued in
  // it. Counting the steps resolved instead gave the first interval half its rate (two
  // steps queued, one resolved) and the last a rate of thousands (nothing left to run).
  int64_t last_report_queued_ = 0;
  double last_rate_ = 0;
  bool stop_asked_ = false;
  OpProfileWindow profile_;
};

// Steps are queued one ahead: step s + 1 is queued before step s is read back, so the host
// reads step s while the GPU runs step s + 1 and never drains its queue inside a step
// (docs/training-step.md). After a step whose weights the host needs (checkpoint, samples,
// evaluation, the last step, a stop), the queue is drained instead. Data-parallel runs
// resolve each step at once: the other ranks' loop (train_steps_only) takes its collective
// calls (the stop vote) in that order.
void TrainLoop::train() {
  start_ = last_report_ = Clock::now();
  last_report_queued_ = run_.step_index();
  const bool distributed = o_.world != nullptr && o_.world->size() > 1;
  const int64_t ahead = distributed ? 0 : 1;
  // What each step in flight asked of the GPU in its queueing, oldest first; its read-back's
  // is added when it resolves (counted where they happen, so a step read back in a drain,
  // nothing queued behind it, still counts its own launches, and the step queued after a
  // drain counts only its own).
  std::deque<DeviceWorkCounts> queued_work;
  while (!summary_.interrupted && (run_.step_index() < total_ || run_.steps_in_flight() > 0)) {
    write_profile(profile_.before_queue(run_.step_index()));
    if (run_.step_index() < total_ && !stop_asked_) {
      const DeviceWorkCounts before = device_work_counts();
      run_.queue_step();
      queued_work.push_back(device_work_counts() - before);
    }
    const bool drain =
        stop_asked_ || run_.step_index() == total_ || weights_needed_after(run_.step_index());
    while (!summary_.interrupted && run_.steps_in_flight() > (drain ? 0 : ahead)) {
      const DeviceWorkCounts before = device_work_counts();
      const StepStats stats = run_.resolve();
      const DeviceWorkCounts read_back = device_work_counts() - before;
      handle(stats, queued_work.front() + read_back);
      queued_work.pop_front();
    }
  }
  write_profile(profile_.finish(run_.step_index()));
  summary_.steps_trained = run_.step_index() - first_;
}

bool TrainLoop::weights_needed_after(int64_t done) const {
  return done == total_ || (c_.ckpt_every > 0 && done % c_.ckpt_every == 0) ||
         (c_.sample_every > 0 && done % c_.sample_every == 0) ||
         (c_.eval_every > 0 && done % c_.eval_every == 0);
}

// Everything the host does with a resolved step. `work`: what the step asked of the GPU,
// its queueing and its read-back.
void TrainLoop::handle(const StepStats& stats, const DeviceWorkCounts& work) {
  TrainProgress p;
  p.stats = stats;
  p.step_work = work;
  stop_asked_ = stop_asked_ || any_rank_asks_to_stop(o_, o_.world);
  p.step = stats.step + 1;
  p.total = total_;
  count(p);
  const auto now = Clock::now();
  const double secs = std::chrono::duration<double>(now - start_).count();
  measure_rate(p, now, secs);
  const bool last = p.step == total_;
  // A stop takes effect once the steps queued behind this one are resolved too.
  const bool stopping = stop_asked_ && !last && run_.steps_in_flight() == 0;
  write_outputs(p, last, stopping);
  if (p.step % c_.log_every == 0 || last || stopping || p.bits_per_dim >= 0) {
    log(p, secs);
    last_report_ = now;
    last_report_queued_ = run_.step_index();
    last_rate_ = p.images_per_second;
  }
  if (last) {
    summary_.final_bits_per_dim = p.bits_per_dim;
    summary_.final_bpd_standard_error = p.bpd_standard_error;
    summary_.final_quality = p.quality;
    summary_.final_roughness = p.roughness;
  }
  if (stopping) summary_.interrupted = true;
}

// A step whose update was not applied (a non-finite loss or gradient) stops the run unless
// the recipe skips them; an applied one counts toward the losses.
void TrainLoop::count(const TrainProgress& p) {
  if (p.stats.applied) {
    losses_.push_back(p.stats.loss);
    loss_by_t_.add(p.stats);
    return;
  }
  ++summary_.skipped_steps;
  CHECK(c_.trainer.skip_nonfinite,
        "step " << p.step << ": the loss is " << number_text(p.stats.loss)
                << " and the gradient norm " << number_text(p.stats.grad_norm)
                << "; the update was not applied and the run stops ("
                << (summary_.last_checkpoint.empty()
                        ? "no checkpoint of this run yet"
                        : "last checkpoint: " + summary_.last_checkpoint)
                << "). Lower 'lr' or raise 'warmup', or set \"nonfinite\": \"skip\"");
}

void TrainLoop::measure_rate(TrainProgress& p, Clock::time_point now, double secs) const {
  const double interval = std::chrono::duration<double>(now - last_report_).count();
  const int64_t queued = run_.step_index() - last_report_queued_;
  p.images_per_second =
      queued > 0 ? queued * c_.batch_size / std::max(interval, 1e-9) : last_rate_;
  p.matmul_tflops = run_.step_flops() * (p.images_per_second / c_.batch_size) * 1e-12;
  const double average = (p.step - first_) * c_.batch_size / std::max(secs, 1e-9);
  p.eta_seconds = (total_ - p.step) * c_.batch_size / std::max(average, 1e-9);
}

// Between steps: not part of a step's op profile (sampling runs the same ops). The
// checkpoint comes first: whatever fails after it, the step is kept.
void TrainLoop::write_outputs(TrainProgress& p, bool last, bool stopping) {
  const bool profiling = op_profiling();
  set_op_profiling(false);
  if ((c_.ckpt_every > 0 && p.step % c_.ckpt_every == 0) || last || stopping) {
    summary_.last_checkpoint = folder_.checkpoint_path(run_.step_index());
    run_.save_checkpoint(summary_.last_checkpoint);
    folder_.keep_newest(c_.keep_checkpoints);
  }
  if (last || (c_.sample_every > 0 && p.step % c_.sample_every == 0))
    write_samples(last ? "final" : step_name(p.step), p);
  if (c_.eval_every > 0 && (p.step % c_.eval_every == 0 || last)) evaluate(p);
  set_op_profiling(profiling);
}

// One line of metrics.jsonl, and the caller's report.
void TrainLoop::log(const TrainProgress& p, double secs) {
  nlohmann::json line = {{"step", p.step}, {"loss", p.stats.loss},
                         {"grad_norm", p.stats.grad_norm}, {"lr", p.stats.lr},
                         {"img_per_s", p.images_per_second},
                         {"matmul_tflops", p.matmul_tflops}, {"time_s", secs}};
  if (!p.stats.applied) line["skipped"] = true;
  if (c_.device == Device::CUDA)  // what one step asked of the GPU (issue: one graph, no syncs)
    line["step_work"] = {{"launches", p.step_work.launches}, {"memsets", p.step_work.memsets},
                         {"copies", p.step_work.copies}, {"host_syncs", p.step_work.host_syncs},
                         {"late_reads", p.step_work.late_reads},
                         {"graph_launches", p.step_work.graph_launches}};
  if (p.quality >= 0) line["quality"] = p.quality;
  if (p.roughness >= 0) line["roughness"] = p.roughness;
  line["loss_by_t"] = loss_by_t_.take();
  if (p.bits_per_dim >= 0) {
    line["bits_per_dim"] = p.bits_per_dim;
    line["bpd_se"] = p.bpd_standard_error;
  }
  folder_.append_metrics(line);
  if (report_) report_(p);
}

void TrainLoop::write_samples(const std::string& name, TrainProgress& p) {
  const Tensor x = run_.sample(c_.n_samples, sample_seed_, c_.sampler, true).x0;
  summary_.samples_path = folder_.samples_dir() + "/" + name + ".png";
  write_image_grid(summary_.samples_path, x, 8);
  if (c_.dataset == "synthetic") {
    const SampleQuality q = synthetic_quality(x);
    p.quality = q.valid_fraction;
    p.roughness = q.mean_roughness;
  }
}

void TrainLoop::evaluate(TrainProgress& p) {
  if (!test_split_) test_split_ = open_dataset(c_, "test");
  LikelihoodConfig lc = run_.likelihood_config();
  lc.timesteps = static_cast<int>(c_.eval_timesteps);
  lc.seed = c_.trainer.seed;  // the same images, times and noise at every evaluation
  const LikelihoodResult r =
      run_.likelihood(*test_split_, std::min(c_.eval_images, test_split_->size()), lc, true);
  p.bits_per_dim = r.bits_per_dim;
  p.bpd_standard_error = r.standard_error;
}

void TrainLoop::write_profile(const std::string& text) {
  if (text.empty()) return;
  write_file_atomic(folder_.path() + "/op_profile.txt", text);
  summary_.notes.push_back(text);
}

void TrainLoop::finish() {
  if (!summary_.interrupted)  // the progressive-generation strip: 8 samples x 10 steps
    write_image_grid(folder_.samples_dir() + "/progressive.png",
                     run_.progressive(std::min<int64_t>(8, c_.n_samples), sample_seed_,
                                      c_.sampler, true),
                     10);
  summary_.report_path = write_run_report(folder_.path());
  const size_t tenth = std::max<size_t>(1, losses_.size() / 10);
  for (size_t i = 0; i < std::min(tenth, losses_.size()); ++i) {
    summary_.first_loss += losses_[i] / tenth;
    summary_.final_loss += losses_[losses_.size() - 1 - i] / tenth;
  }
}

// The keys this run cannot honour, each a note (the run goes on without them).
void note_ignored_keys(const ImageRun& run, TrainSummary& summary) {
  const ImageTrainConfig& c = run.config();
  if (c.trainer.cuda_graph && c.device != Device::CUDA)
    summary.notes.push_back("cuda_graph: CUDA graphs are GPU work; this run's steps are eager");
  else if (c.trainer.cuda_graph && run.sharded())
    summary.notes.push_back("cuda_graph: sharded steps (micro_batch, data parallelism) run "
                            "eagerly; only whole steps are captured");
}

}  // namespace

TrainSummary train_images(const ImageTrainConfig& c, const TrainOptions& o,
                          const std::function<void(const TrainProgress&)>& report) {
  Collective* world = o.world;
  const bool lead = world == nullptr || world->rank() == 0;  // writes the folder
  const bool distributed = world != nullptr && world->size() > 1;
  ImageRun run(c);
  if (distributed) run.set_world(world);  // one process: the plain step, or shards in a row
  nlohmann::json resolved = nlohmann::json::object();
  for (const ConfigKey& k : c.keys) resolved[k.name] = k.value;
  if (distributed) check_ranks_share_config(*world, resolved);
  std::unique_ptr<RunFolder> folder;
  if (lead) folder = std::make_unique<RunFolder>(c.out_dir);
  TrainSummary summary;
  const std::string resumed = lead ? start_run(run, *folder, o, summary) : "";
  if (distributed) {  // every rank continues from the checkpoint rank 0 resumed
    const std::string path = world->broadcast_text(resumed);
    if (!lead && !path.empty()) run.load_checkpoint(path);
  }
  if (!lead) return train_steps_only(run, o, *world);
  folder->write_config(resolved);
  write_file_atomic(folder->path() + "/run.json",
                    nlohmann::json{{"command", o.command},
                                   {"device", describe_device(c)},
                                   {"ranks", world ? world->describe() : "1 process"},
                                   {"started", now_utc()},
                                   {"resumed_from", o.resume}}
                            .dump(2) + "\n");
  summary.log_path = folder->metrics_path();
  if (o.resume.empty() && c.dataset == "synthetic") {
    const SampleQuality q = synthetic_quality(
        run.sample(c.n_samples, c.trainer.seed + kSampleSeedOffset, c.sampler, false).x0);
    summary.untrained_quality = q.valid_fraction;
    summary.untrained_roughness = q.mean_roughness;
  }
  note_ignored_keys(run, summary);
  TrainLoop loop(run, *folder, o, summary, report);
  loop.train();
  loop.finish();
  return summary;
}

}  // namespace ddpm
