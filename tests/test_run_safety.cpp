// Runs that survive people: hostile checkpoint contents, used and shared run folders, the
// order of final writes, non-finite steps, resumed configs that differ, strict numbers.
// (Signals and two processes in one folder are tested from the command line:
// tests/cli/*.sh.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "models/ddpm/timestep_sampler.h"
#include "models/run_folder.h"
#include "models/unet/image_train.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

nlohmann::json tiny_json(const std::vector<std::string>& overrides) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o :
       {"base_channels=8", "groups=4", "batch_size=2", "n_samples=2", "sample_steps=2",
        "log_every=1", "timestep_sampler=importance"})
    apply_override(j, o);
  for (const std::string& o : overrides) apply_override(j, o);
  return j;
}

ImageTrainConfig tiny(const std::string& out, std::vector<std::string> overrides = {}) {
  overrides.push_back("out_dir=" + out);
  return read_image_train_config(tiny_json(overrides), "tiny.json (test)");
}

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

TrainSummary train(const ImageTrainConfig& c, TrainOptions o = {}) {
  return train_images(c, o, nullptr);
}

std::vector<int64_t> checkpoint_steps(const std::string& out) {
  std::vector<int64_t> steps;
  RunFolder f(out);
  for (const auto& [s, p] : f.checkpoints()) steps.push_back(s);
  return steps;
}

std::vector<int64_t> logged_steps(const std::string& out) {
  std::vector<int64_t> steps;
  std::ifstream in(out + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line)["step"]);
  return steps;
}

// ---- the importance sampler's state from a checkpoint ----

// The tests' own files: ctest runs tests in parallel, and one test in several executables at
// once (the GPU build, the emulation's asan and tsan builds), all writing under TempDir() by
// fixed names. Each process has a directory of its own (tests/private_temp_dir.h, set up by
// the test mains): with one /tmp, a GPU run loaded a checkpoint another process had just
// written over its own, and a bf16 step failed its comparison on CI.
TEST(RunSafety, EachTestProcessWritesInADirectoryOfItsOwn) {
  const fs::path dir = fs::path(::testing::TempDir()).parent_path();  // TempDir() ends in '/'
  EXPECT_EQ(dir.filename().string().rfind("ddpm-test-", 0), 0u) << dir;
  EXPECT_TRUE(fs::is_directory(dir)) << dir;
}

TEST(RunSafety, TimestepSamplerStateIsValidatedBeforeUse) {
  TimestepSampler s(TimestepSamplerKind::Importance, 50);
  s.update({3, 7}, {0.5, 0.25});
  const nlohmann::json good = s.state();
  auto with = [&](const char* field, size_t i, nlohmann::json v) {
    nlohmann::json bad = good;
    bad[field][i] = v;
    return bad;
  };
  TimestepSampler t(TimestepSamplerKind::Importance, 50);
  // 'next' indexes the history: far out (was a SIGSEGV), just out (overwrote a neighbour)
  for (const nlohmann::json& v : {nlohmann::json(100000000), nlohmann::json(-100000000),
                                  nlohmann::json(10), nlohmann::json(-1), nlohmann::json(2.5)})
    expect_error([&] { t.load_state(with("next", 3, v), "ckpt.safetensors: sampler"); },
                 {"ckpt.safetensors: sampler", "'next' entry 3", "[0, 10)"});
  expect_error([&] { t.load_state(with("counts", 0, 11)); }, {"'counts' entry 0", "[0, 10]"});
  expect_error([&] { t.load_state(with("losses", 5, "nan")); }, {"'losses' entry 5"});
  expect_error([&] { t.load_state(with("losses", 5, -1.0)); }, {"'losses' entry 5", ">= 0"});
  nlohmann::json short_table = good;
  short_table["next"].erase(0);
  expect_error([&] { t.load_state(short_table); }, {"'next' must be a list of 50 numbers"});
  // nothing was taken from the bad states; a good one loads and keeps working
  t.load_state(good);
  EXPECT_EQ(t.state(), good);
  t.update({3}, {1.0});
}

// ---- the run folder ----

TEST(RunSafety, OutDirMustNameAFolderOtherThanTheRoot) {
  expect_error([] { RunFolder f(""); }, {"key 'out_dir' is empty"});
  expect_error([] { RunFolder f("/"); }, {"key 'out_dir' is '/'", "root directory"});
  expect_error([] { RunFolder f("/tmp/../"); }, {"root directory"});
}

TEST(RunSafety, ASecondTrainerInTheFolderFailsAtOnce) {
  const std::string out = fresh_dir("locked");
  RunFolder first(out);
  expect_error([&] { RunFolder second(out); }, {"in use by another trainer", "pid"});
  expect_error([&] { train(tiny(out, {"steps=1"})); }, {"in use by another trainer"});
}

TEST(RunSafety, TemporaryFilesOfAKilledWriteAreRemoved) {
  const std::string out = fresh_dir("stale");
  fs::create_directories(out + "/ckpt");
  std::ofstream(out + "/ckpt/step_00000004.safetensors.tmp.999.0") << "half";
  std::ofstream(out + "/metrics.jsonl.tmp.999.1") << "half";
  { RunFolder f(out); }
  EXPECT_FALSE(fs::exists(out + "/ckpt/step_00000004.safetensors.tmp.999.0"));
  EXPECT_FALSE(fs::exists(out + "/metrics.jsonl.tmp.999.1"));
}

TEST(RunSafety, ANewRunDoesNotStartOverAnOldOne) {
  const std::string out = fresh_dir("used");
  train(tiny(out, {"steps=3", "ckpt_every=1", "keep_checkpoints=5"}));
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{1, 2, 3}));
  expect_error([&] { train(tiny(out, {"steps=2"})); },
               {"already holds a run", "3 checkpoints up to step 3", "--resume latest", "--overwrite"});
  EXPECT_EQ(logged_steps(out), (std::vector<int64_t>{1, 2, 3}));  // untouched
  TrainOptions o;
  o.overwrite = true;
  const TrainSummary s = train(tiny(out, {"steps=2", "ckpt_every=1"}), o);
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{1, 2}));  // this run's, none deleted by mistake
  EXPECT_EQ(logged_steps(out), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(s.last_checkpoint, out + "/ckpt/step_00000002.safetensors");
  EXPECT_TRUE(fs::exists(s.last_checkpoint));
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  // nor the old run's sample grids: a grid of the old run is not left beside the new run's
  std::ofstream(out + "/samples/step_7.png") << "old";
  train(tiny(out, {"steps=1"}), o);
  EXPECT_FALSE(fs::exists(out + "/samples/step_7.png"));
  EXPECT_TRUE(fs::exists(out + "/samples/final.png"));
}

// Resuming an older checkpoint: the later ones (another timeline) and their metrics lines
// are set aside, so retention and the log follow the resumed run only.
TEST(RunSafety, ResumingAnOlderCheckpointSetsTheLaterTimelineAside) {
  const std::string out = fresh_dir("timeline");
  train(tiny(out, {"steps=4", "ckpt_every=1", "keep_checkpoints=10"}));
  TrainOptions o;
  o.resume = out + "/ckpt/step_00000002.safetensors";
  const TrainSummary s = train(tiny(out, {"steps=5", "ckpt_every=1", "keep_checkpoints=2"}), o);
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(logged_steps(out), (std::vector<int64_t>{1, 2, 3, 4, 5}));  // 3, 4 once each
  EXPECT_TRUE(fs::exists(out + "/ckpt/abandoned/step_00000003.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/ckpt/abandoned/step_00000004.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/metrics.abandoned.jsonl"));
  // the checkpoint resumed from is this timeline's: not set aside (retention removed it)
  EXPECT_FALSE(fs::exists(out + "/ckpt/abandoned/step_00000002.safetensors"));
  bool noted = false;
  for (const std::string& n : s.notes) noted |= n.find("set aside") != std::string::npos;
  EXPECT_TRUE(noted);
  // --resume latest takes the newest readable checkpoint: a corrupt newest one is skipped
  write_file_atomic(out + "/ckpt/step_00000009.safetensors", std::string("garbage"));
  EXPECT_EQ(latest_checkpoint(out), out + "/ckpt/step_00000005.safetensors");
  // and so is a readable safetensors file that is no checkpoint (no format, no step)
  write_safetensors(out + "/ckpt/step_00000010.safetensors",
                    {{"w", Tensor::zeros(Shape{2}, DType::F32)}}, {});
  EXPECT_EQ(latest_checkpoint(out), out + "/ckpt/step_00000005.safetensors");
}

// Checkpoint names are step_ and the step in at least 8 digits: a run past step 99,999,999
// writes 9 and more, and they are still its checkpoints (18 digits at most: int64).
TEST(RunSafety, CheckpointsPastEightDigitsAreStillFound) {
  const std::string out = fresh_dir("long_names");
  fs::create_directories(out + "/ckpt");
  for (const char* name : {"step_00000007.safetensors", "step_123456789.safetensors",
                           "step_100000000000000000.safetensors",
                           "step_1000000000000000000.safetensors", "step_12a.safetensors",
                           "step_.safetensors", "notes.safetensors"})
    std::ofstream(out + "/ckpt/" + name) << "x";
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{7, 123456789, 100000000000000000}));
  EXPECT_EQ(RunFolder(out).checkpoint_path(123456789), out + "/ckpt/step_123456789.safetensors");
}

// The final checkpoint is written before the final sample grid: a grid that cannot be
// written loses no training.
TEST(RunSafety, TheFinalCheckpointComesBeforeTheFinalSamples) {
  const std::string out = fresh_dir("grid_fails");
  fs::create_directories(out + "/samples/final.png");  // a folder where the grid should go
  expect_error([&] { train(tiny(out, {"steps=2"})); }, {"final.png"});
  EXPECT_TRUE(fs::exists(out + "/ckpt/step_00000002.safetensors"));
}

TEST(RunSafety, ANonFiniteStepStopsTheRunBeforeItsUpdate) {
  // Weight decay 10 at lr 10 multiplies every weight by -99 per step: inf within a few steps.
  const std::vector<std::string> explode = {"lr=10", "weight_decay=10", "warmup=0", "steps=30",
                                            "ckpt_every=1", "keep_checkpoints=100"};
  const std::string out = fresh_dir("nonfinite");
  try {
    train(tiny(out, explode));
    ADD_FAILURE() << "expected the run to stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the update was not applied"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"nonfinite\": \"skip\""), std::string::npos);
  }
  // every checkpoint written loads (no NaN reached one)
  const auto written = RunFolder(out).checkpoints();
  ASSERT_FALSE(written.empty());
  for (const auto& [step, path] : written) EXPECT_NO_THROW(validate_checkpoint(path)) << step;
  // with "skip" the run goes on to the end, counting the skipped steps
  std::vector<std::string> skip = explode;
  skip.push_back("nonfinite=skip");
  skip.push_back("steps=8");
  const std::string skipped = fresh_dir("nonfinite_skip");
  const TrainSummary s = train(tiny(skipped, skip));
  EXPECT_GT(s.skipped_steps, 0);
  EXPECT_EQ(s.steps_trained, 8);
  // the checkpoint counts AdamW's applied steps apart from the steps taken (its bias
  // corrections follow the applied ones), and a resumed run takes both back
  const std::string last = RunFolder(skipped).checkpoints().back().second;
  const SafetensorsFile f = read_safetensors(last);
  EXPECT_EQ(f.metadata.at("step"), "8");
  EXPECT_EQ(f.metadata.at("optimizer_steps"), std::to_string(8 - s.skipped_steps));
  ImageRun resumed(tiny(skipped, skip));
  resumed.load_checkpoint(last);
  EXPECT_EQ(resumed.step_index(), 8);
  EXPECT_EQ(resumed.trainer().optimizer().steps_taken(), 8 - s.skipped_steps);
}

TEST(RunSafety, ACheckpointHoldingNaNIsRefused) {
  const std::string out = fresh_dir("nan_ckpt");
  train(tiny(out, {"steps=1"}));
  const std::string path = out + "/ckpt/step_00000001.safetensors";
  SafetensorsFile f = read_safetensors(path);
  std::vector<std::pair<std::string, Tensor>> tensors(f.tensors.begin(), f.tensors.end());
  for (auto& [name, t] : tensors)
    if (name == "optim.v") t.data<float>()[7] = std::nanf("");
  write_safetensors(path, tensors, f.metadata);
  expect_error([&] { validate_checkpoint(path); }, {"step_00000001.safetensors", "'optim.v'", "element 7", "NaN"});
}

// ---- resuming with a config that differs ----

TEST(RunSafety, AResumedRunComparesItsConfigWithTheCheckpoints) {
  const std::string out = fresh_dir("compare");
  train(tiny(out, {"steps=2"}));
  TrainOptions o;
  o.resume = "latest";
  expect_error([&] { train(tiny(out, {"steps=4", "base_channels=16"}), o); },
               {"the model differs", "base_channels 8 -> 16"});
  expect_error([&] { train(tiny(out, {"steps=4", "lr=0.01"}), o); },
               {"would change the recipe", "lr 0.001 -> 0.01", "--set"});
  expect_error([&] { train(tiny(out, {"steps=2"}), o); }, {"at step 2", "nothing to train"});
  // a recipe change named on purpose is allowed and reported; free keys may change
  o.named = {"lr"};
  const TrainSummary s = train(tiny(out, {"steps=3", "lr=0.01", "log_every=5"}), o);
  EXPECT_EQ(s.steps_trained, 1);
  bool lr_noted = false;
  for (const std::string& n : s.notes) lr_noted |= n.find("lr 0.001 -> 0.01") != std::string::npos;
  EXPECT_TRUE(lr_noted);
}

TEST(RunSafety, CheckpointMetadataIsParsedStrictly) {
  const std::string out = fresh_dir("metadata");
  train(tiny(out, {"steps=1"}));
  const std::string path = out + "/ckpt/step_00000001.safetensors";
  SafetensorsFile f = read_safetensors(path);
  const std::vector<std::pair<std::string, Tensor>> tensors(f.tensors.begin(), f.tensors.end());
  for (const auto& [key, value, what] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"step", "1.5", "metadata 'step' must be a whole number"},
           {"step", "0x10", "metadata 'step' must be a whole number"},
           {"step", "99999999999999999999", "metadata 'step' must be a whole number"},
           {"config", "{not json", "its config is not a valid JSON object"},
           {"timestep_sampler", "[1,2", "'timestep_sampler' is not valid JSON"},
           {"step", "-1", "metadata 'step' is -1"},
           {"optimizer_steps", "2", "metadata 'optimizer_steps' 2 is not in [0, step 1]"},
           {"optimizer_steps", "-1", "metadata 'optimizer_steps' -1 is not in [0, step 1]"},
           {"format", "ddpm-checkpoint-0", "has format 'ddpm-checkpoint-0', expected"}}) {
    auto meta = f.metadata;
    meta[key] = value;
    const std::string bad = out + "/bad.safetensors";
    write_safetensors(bad, tensors, meta);
    expect_error([&] { validate_checkpoint(bad); }, {"bad.safetensors", what.c_str()});
  }
  // A checkpoint from before optimizer_steps was written: no step of it was skipped.
  auto meta = f.metadata;
  meta.erase("optimizer_steps");
  const std::string older = out + "/older.safetensors";
  write_safetensors(older, tensors, meta);
  ImageRun run(tiny(out, {"steps=1"}), /*with_data=*/false);
  run.load_checkpoint(older);
  EXPECT_EQ(run.trainer().optimizer().steps_taken(), 1);
  // A tensor of the right size in the wrong shape (transposed) is refused by its shape.
  std::vector<std::pair<std::string, Tensor>> transposed = tensors;
  bool found = false;
  for (auto& [name, t] : transposed)
    if (!found && t.shape().ndim() == 2 && t.shape()[0] != t.shape()[1]) {
      t = t.view(Shape{t.shape()[1], t.shape()[0]});
      found = true;
      const std::string bad = out + "/transposed.safetensors";
      write_safetensors(bad, transposed, f.metadata);
      expect_error([&] { validate_checkpoint(bad); },
                   {"transposed.safetensors", ("tensor '" + name + "' is").c_str(), "the model's is"});
    }
  EXPECT_TRUE(found) << "the model has a non-square matrix";
}

// ---- numbers ----

TEST(RunSafety, IntegersAreWholeNumbersOnly) {
  EXPECT_EQ(parse_integer("42", "x"), 42);
  EXPECT_EQ(parse_integer("-7", "x"), -7);
  for (const char* bad : {"3.7", "1e3", "0x10", "", "12abc", " 5", "9223372036854775808"})
    expect_error([&] { parse_integer(bad, "option '--n'"); }, {"option '--n' must be a whole number"});
  // config keys: a float, an exponent or a hex string is not an integer
  for (const char* v : {"steps=3.7", "steps=1e3", "steps=0x10"})
    expect_error([&] { read_image_train_config(tiny_json({v}), "tiny.json"); },
                 {"tiny.json", "key 'steps'", "integer"});
}

// A model too large for the machine is an error naming the keys, before any allocation
// (50 billion parameters: 1.2 TB of weights, gradients, moments and EMA).
TEST(RunSafety, AModelTooLargeForTheMachineNamesItsKeys) {
  const ImageTrainConfig c = read_image_train_config(
      tiny_json({"base_channels=4096", "groups=32", "channel_mult=[1,2,2,2]"}), "tiny.json");
  expect_error([&] { ImageRun run(c); }, {"parameters", "key", "'base_channels' 4096", "GiB"});
}

TEST(RunSafety, AttentionAtAResolutionNoLevelHasIsAnError) {
  expect_error([] { read_image_train_config(tiny_json({"attention_resolutions=[12]"}), "tiny.json"); },
               {"key 'attention_resolutions'", "12", "(32, 16)"});
}

}  // namespace
}  // namespace ddpm
