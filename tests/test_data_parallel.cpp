// Data-parallel training: DiffusionTrainer::step_sharded over a Collective (engine/collective.h).
// ctest runs this binary twice: test by test in one process (DataParallel.*: the cross-rank
// tests skip there), and whole under `mpirun -np 2` (DataParallel.TwoRanks), where every
// rank also computes the one-process reference itself and the two must agree bit for bit:
// 2 ranks x 2 shards == 1 process x 4 shards, with dropout, EMA, uniform and importance
// timesteps; resume 2 -> 1 and 1 -> 2 ranks; disagreeing ranks fail with a message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "engine/distributed/world.h"
#include "engine/file_io.h"
#include "models/unet/image_train.h"
#include "tests/config_fixture.h"
#include "tests/test_util.h"

#if defined(DDPM_WITH_NCCL)
#include "engine/distributed/backends.h"
#endif

namespace ddpm {
namespace {

using test::expect_error;
using test::tiny_json;

// A step of 8 samples in 4 shards of 2, with every piece of state a rank must agree on:
// dropout masks, EMA, AdamW moments, and (T = 4, so it warms up within the test) the
// importance sampler's loss history.
ImageTrainConfig sharded_config(const std::string& sampler) {
  return read_image_train_config(
      tiny_json({"base_channels=8", "groups=4", "batch_size=8", "micro_batch=2", "steps=8",
                 "dropout=0.1", "ema_decay=0.9", "warmup=2", "T=4", "eval_timesteps=0", "sample_steps=0", "timestep_sampler=" + sampler,
                 "out_dir=" + ::testing::TempDir() + "/dp_run"}),
      "tiny.json (data-parallel test)");
}

struct State {
  std::vector<float> weights, ema, m, v;
  nlohmann::json sampler;
  bool warmed_up = false;  // the importance sampler had its full history (so it was used)
  bool operator==(const State& o) const {
    return weights == o.weights && ema == o.ema && m == o.m && v == o.v && sampler == o.sampler;
  }
};

State state_of(ImageRun& run) {
  DiffusionTrainer& t = run.trainer();
  return {run.store().flat_data().to_vector<float>(), t.ema()->weights().to_vector<float>(),
          t.optimizer().first_moment().to_vector<float>(),
          t.optimizer().second_moment().to_vector<float>(), t.timestep_sampler().state(),
          t.timestep_sampler().warmed_up()};
}

// Trains `steps` steps on `world` (nullptr: one process, no collective), from `resume`
// when given, saving to `save` (rank 0) when given.
State train(const ImageTrainConfig& c, Collective* world, int steps, const std::string& resume = "",
            const std::string& save = "") {
  ImageRun run(c);
  run.set_world(world);
  if (!resume.empty()) run.load_checkpoint(resume);
  for (int i = 0; i < steps; ++i) run.step();
  if (!save.empty() && (world == nullptr || world->rank() == 0)) run.save_checkpoint(save);
  if (world) world->barrier();  // the file is complete before any rank reads it
  return state_of(run);
}

Collective& two_ranks() { return open_world(Device::CPU); }

#define REQUIRE_RANKS()                                                                   \
  if (two_ranks().size() < 2)                                                            \
  GTEST_SKIP() << "needs 2 MPI ranks: ctest runs it as DataParallel.TwoRanks (mpirun -np 2)"

TEST(DataParallel, OneShardOnAWorldOfOneIsThePlainStep) {
  // batch 8 in one shard through step_sharded (a world is set) == step() without one
  const ImageTrainConfig c = read_image_train_config(
      tiny_json({"base_channels=8", "groups=4", "batch_size=8", "steps=8", "dropout=0.1",
                 "ema_decay=0.9", "warmup=2", "T=4", "eval_timesteps=0", "sample_steps=0"}),
      "tiny.json (test)");
  SingleProcess alone;
  EXPECT_TRUE(train(c, nullptr, 3) == train(c, &alone, 3));
}

TEST(DataParallel, ShardsAreDeterministicAndTheirLossIsTheMean) {
  // 4 shards of 2 in one process: reproducible; loss = mean of the per-sample losses
  // (uniform timesteps: no importance weights), each shard drawing its own noise
  const ImageTrainConfig c = sharded_config("uniform");
  EXPECT_TRUE(train(c, nullptr, 3) == train(c, nullptr, 3));
  ImageRun run(c);
  const StepStats st = run.step();
  ASSERT_EQ(st.per_sample_loss.size(), 8u);
  ASSERT_EQ(st.timesteps.size(), 8u);
  double mean = 0;
  for (int m = 0; m < 4; ++m) {
    double shard = 0;
    for (int j = 0; j < 2; ++j) shard += st.per_sample_loss[2 * m + j] / 2;
    mean += shard / 4;
  }
  EXPECT_NEAR(st.loss, mean, 1e-5 * mean);
  EXPECT_GT(st.grad_norm, 0.0);
  // a batch of 8 unsharded is another draw of noise and dropout, not the same step (seen
  // from the second step on: the zero-initialised output layer predicts 0 at the first)
  const ImageTrainConfig whole = read_image_train_config(
      tiny_json({"base_channels=8", "groups=4", "batch_size=8", "steps=8", "dropout=0.1",
                 "ema_decay=0.9", "warmup=2", "T=4", "eval_timesteps=0", "sample_steps=0"}),
      "tiny.json (test)");
  ImageRun plain(whole);
  plain.step();
  EXPECT_NE(plain.step().loss, run.step().loss);
}

TEST(DataParallel, BadShardingIsAClearError) {
  expect_error([] { read_image_train_config(tiny_json({"batch_size=6", "micro_batch=4"}), "x.json"); },
               {"x.json", "'micro_batch' 4 does not divide 'batch_size' 6"});
  // 6 / 2 = 3 shards cannot be shared by 2 ranks (a stand-in world of 2: no collective runs)
  struct FakeTwo : SingleProcess {
    int size() const override { return 2; }
  } two;
  ImageRun run(read_image_train_config(tiny_json({"batch_size=6", "micro_batch=2"}), "x.json"));
  expect_error([&] { run.set_world(&two); },
               {"'batch_size' 6 / 'micro_batch' 2 = 3 shards per step cannot be shared by 2 ranks"});
  ImageRun odd(read_image_train_config(tiny_json({"batch_size=5"}), "x.json"));
  expect_error([&] { odd.set_world(&two); },
               {"'batch_size' 5 cannot be shared by 2 ranks"});
}

TEST(DataParallel, TwoRanksComputeTheBitsOfOneProcess) {
  REQUIRE_RANKS();
  Collective& world = two_ranks();
  for (const std::string sampler : {"uniform", "importance"}) {
    const ImageTrainConfig c = sharded_config(sampler);
    // 10 steps of 8 samples over T = 4: every t has its 10 losses after ~6 steps (a step's
    // losses join the history after the next step's draw), so the last draws used the p_t
    const State one = train(c, nullptr, 10), two = train(c, &world, 10);
    EXPECT_TRUE(one == two) << sampler << ", rank " << world.rank();
    if (sampler == "importance") {
      EXPECT_TRUE(two.warmed_up);
    }
    // and every rank holds the same weights
    const std::vector<std::string> weights = world.all_gather_text(std::string(
        reinterpret_cast<const char*>(two.weights.data()), two.weights.size() * sizeof(float)));
    for (size_t r = 1; r < weights.size(); ++r)
      EXPECT_TRUE(weights[r] == weights[0]) << sampler << ": rank " << r << "'s weights differ";
  }
}

TEST(DataParallel, ResumesOnAnotherNumberOfRanks) {
  REQUIRE_RANKS();
  Collective& world = two_ranks();
  const ImageTrainConfig c = sharded_config("importance");
  const std::string dir = world.broadcast_text(::testing::TempDir() + "/dp_" + std::to_string(getpid()));
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  world.barrier();
  const State straight = train(c, nullptr, 6);
  // 2 ranks for 3 steps, then 1 process for 3
  train(c, &world, 3, "", dir + "/two.safetensors");
  EXPECT_TRUE(train(c, nullptr, 3, dir + "/two.safetensors") == straight) << "2 -> 1 ranks";
  // 1 process for 3 steps, then 2 ranks for 3
  train(c, nullptr, 3, "", dir + "/one.safetensors");
  EXPECT_TRUE(train(c, &world, 3, dir + "/one.safetensors") == straight) << "1 -> 2 ranks";
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}

TEST(DataParallel, DisagreeingRanksFailWithTheMessage) {
  REQUIRE_RANKS();
  Collective& world = two_ranks();
  ImageTrainConfig c = read_image_train_config(
      tiny_json({"base_channels=8", "groups=4", "batch_size=4", "steps=2",
                 "seed=" + std::to_string(world.rank()),
                 "out_dir=" + ::testing::TempDir() + "/dp_disagree"}),
      "tiny.json");
  TrainOptions o;
  o.world = &world;
  expect_error([&] { train_images(c, o, {}); },
               {"the 2 ranks disagree on the resolved config (rank 1 has seed 1, rank 0 has 0)"});
}

#if defined(DDPM_WITH_NCCL)
TEST(DataParallel, NcclWorldOfOneMatchesTheLocalStep) {
  REQUIRE_GPU();
  nlohmann::json j = tiny_json({"base_channels=8", "groups=4", "batch_size=8", "micro_batch=2",
                                "steps=4", "dropout=0.1", "ema_decay=0.9", "T=4", "eval_timesteps=0", "sample_steps=0", "device=cuda"});
  const ImageTrainConfig c = read_image_train_config(j, "tiny.json (cuda)");
  std::unique_ptr<Collective> nccl =
      distributed::make_nccl_world(std::make_unique<SingleProcess>());
  EXPECT_TRUE(train(c, nullptr, 4) == train(c, nccl.get(), 4));
}
#endif

}  // namespace
}  // namespace ddpm
