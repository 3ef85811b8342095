// The training step captured as one CUDA graph (models/ddpm/captured_step.h): replayed
// steps give the eager steps' bits; a replay launches one graph and no kernel, allocates
// nothing and never waits; what cannot be replayed (another batch shape, an upload inside
// a capture) is an error naming it; the allocator's private pools keep a graph's blocks.
// The model tests skip without a GPU (the CPU emulation runs them: it captures and replays
// graphs as a GPU does, tests/cuda_emulation/README.md); the config checks run anywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/cuda_graph.h"
#include "models/ddpm/captured_step.h"
#include "tests/cuda_model_config.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"
#include "engine/host_staging.h"
#endif

namespace ddpm {
namespace {

// Everything that changes per step is exercised: the importance sampler with T = 2 (its
// history warm within the run, so the weights uploaded each step are not all 1), the lr
// warm-up and the EMA warm-up (lr and decay differ at every step of the run), dropout, the
// random flip
// (tiny.json) and the step's noise. Batch 4 warms the history by step 6.
ImageTrainConfig graph_config(bool graph, const std::string& conv = "tiled",
                              const char* precision = "fp32",
                              const std::vector<std::string>& more = {}) {
  std::vector<std::string> overrides = {
      "batch_size=4", "timestep_sampler=importance", "T=2", "sample_steps=2", "warmup=100", "ema_warmup=true",
      std::string("cuda_graph=") + (graph ? "true" : "false"), "cuda_conv=" + conv};
  overrides.insert(overrides.end(), more.begin(), more.end());
  return test::small_unet_config("cuda", precision, overrides);
}

struct Trained {
  std::vector<StepStats> stats;
  std::vector<float> weights, ema, moments;
  std::vector<double> probabilities;
};

// `steps` steps queued one ahead, as the train loop queues them.
Trained train(ImageRun& run, int steps) {
  Trained r;
  run.queue_step();
  for (int i = 1; i < steps; ++i) {
    run.queue_step();
    r.stats.push_back(run.resolve());
  }
  r.stats.push_back(run.resolve());
  r.weights = run.store().flat_data().to(Device::CPU).to_vector<float>();
  r.ema = run.trainer().ema()->weights().to(Device::CPU).to_vector<float>();
  r.moments = run.trainer().optimizer().second_moment().to(Device::CPU).to_vector<float>();
  r.probabilities = run.trainer().timestep_sampler().probabilities();
  return r;
}

void expect_replays_are_eager_steps(const std::string& conv, const char* precision,
                                    const std::vector<std::string>& more = {}) {
  constexpr int kSteps = 7;  // 2 eager, the captured one, 4 replays
  ImageRun eager_run(graph_config(false, conv, precision, more));
  ImageRun graph_run(graph_config(true, conv, precision, more));
  const Trained eager = train(eager_run, kSteps), graph = train(graph_run, kSteps);
  ASSERT_EQ(eager_run.trainer().captured_step(), nullptr);
  ASSERT_NE(graph_run.trainer().captured_step(), nullptr);
  ASSERT_TRUE(graph_run.trainer().captured_step()->captured());
  for (int i = 0; i < kSteps; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(graph.stats[i].timesteps, eager.stats[i].timesteps);
    EXPECT_EQ(graph.stats[i].lr, eager.stats[i].lr);
    EXPECT_EQ(graph.stats[i].per_sample_loss, eager.stats[i].per_sample_loss);
    EXPECT_EQ(graph.stats[i].loss, eager.stats[i].loss);
    EXPECT_EQ(graph.stats[i].grad_norm, eager.stats[i].grad_norm);
  }
  EXPECT_EQ(graph.weights, eager.weights);
  EXPECT_EQ(graph.ema, eager.ema);
  EXPECT_EQ(graph.moments, eager.moments);
  EXPECT_EQ(graph.probabilities, eager.probabilities);
  // what made the replays differ from one another was in use
  EXPECT_NE(eager.stats[kSteps - 2].lr, eager.stats[kSteps - 1].lr);
  ASSERT_TRUE(eager_run.trainer().timestep_sampler().warmed_up());
  EXPECT_NE(eager.probabilities[0], eager.probabilities[1]);
  EXPECT_NE(eager.stats[kSteps - 2].loss, eager.stats[kSteps - 1].loss);
}

TEST(CudaGraph, ReplayedStepsAreTheEagerStepsBitForBit) {
  REQUIRE_GPU();
  expect_replays_are_eager_steps("tiled", "fp32");
}

// The same on cuDNN's convolutions in bf16 (cuda_conv: cudnn) on fp32 activations: their
// plans are made in the eager steps, and cuDNN's calls and the staging around them (the bf16
// copies of fp32 operands) replay with the graph.
TEST(CudaGraph, ReplayedStepsOnCudnnAreTheEagerStepsBitForBit) {
  REQUIRE_GPU();
  expect_replays_are_eager_steps("cudnn", "bf16", {"activations=fp32"});
  set_conv_algorithm(ConvAlgorithm::Tiled);  // the runs set them process-wide
  set_precision(Precision::F32);
}

// The same with bf16 activations (activations: bf16, bf16's default): the casts, the bf16 kernels and the
// widened ops' copies all come from the caching allocator and replay at the same addresses.
// With the small shapes (the CPU emulation, the sanitizers) the convolutions run on cuDNN,
// widened: 14 steps of v4's emulated tensor cores take the emulator 10 minutes.
TEST(CudaGraph, ReplayedStepsOnBf16ActivationsAreTheEagerStepsBitForBit) {
  REQUIRE_GPU();
  expect_replays_are_eager_steps(test::small_shapes_only() ? "cudnn" : "tiled", "bf16",
                                 {"activations=bf16"});
  set_conv_algorithm(ConvAlgorithm::Tiled);
  set_precision(Precision::F32);  // the runs set them process-wide
  set_activation_dtype(DType::F32);
}

// Sampling with cuda_graph: each kind of denoising step (with noise, without) is taken once
// eagerly, then captured and replayed, and a recorded step stays eager: the same samples
// and recorded x0, bit for bit, for DDPM and for DDIM with noise. 5 steps i = 4 .. 0: 4
// eager (the first with noise), 3 captured and launched, 2 recorded (eager), 1 replayed,
// 0 eager (the first without noise): 2 graph launches.
TEST(CudaGraph, SamplingReplaysGiveTheEagerSamples) {
  REQUIRE_GPU();
  ImageRun run(test::small_unet_config("cuda"));
  run.step();  // weights off their initialisation (the last conv starts at zero)
  for (const SamplerKind kind : {SamplerKind::Ddpm, SamplerKind::Ddim}) {
    SCOPED_TRACE(kind == SamplerKind::Ddpm ? "DDPM" : "DDIM");
    SamplerConfig sc = run.config().sampler;
    sc.kind = kind;
    sc.steps = 5;
    sc.eta = 0.5;
    sc.record = {2};
    const Shape shape{2, 32, 32, 3};
    const SampleResult eager =
        sample(run.trainer().schedule(), run.denoiser(), sc, shape, 7, Device::CUDA);
    sc.cuda_graph = true;
    const DeviceWorkCounts before = device_work_counts();
    const SampleResult graph =
        sample(run.trainer().schedule(), run.denoiser(), sc, shape, 7, Device::CUDA);
    EXPECT_EQ(device_work_counts().graph_launches - before.graph_launches, 2u);
    const std::vector<float> x = graph.x0.to(Device::CPU).to_vector<float>();
    EXPECT_EQ(x, eager.x0.to(Device::CPU).to_vector<float>());
    ASSERT_EQ(graph.progress.size(), 1u);
    EXPECT_EQ(graph.progress[0].second.to(Device::CPU).to_vector<float>(),
              eager.progress[0].second.to(Device::CPU).to_vector<float>());
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_LT(*lo, *hi);  // samples, not a constant
  }
}

#if DDPM_WITH_CUDA
// A replayed step asks the host for one graph launch, the copies of its inputs and the
// read-back of its summary: no kernel launch, no memset, no wait, no allocation.
TEST(CudaGraph, AReplayedStepLaunchesOneGraphAndAllocatesNothing) {
  REQUIRE_GPU();
  ImageRun run(graph_config(true));
  for (int i = 0; i < DiffusionTrainer::kEagerStepsBeforeCapture; ++i) run.queue_step();
  run.resolve();
  const DeviceWorkCounts before_capture = device_work_counts();
  run.queue_step();  // captured and launched
  run.resolve();
  const CapturedStep* step = run.trainer().captured_step();
  ASSERT_NE(step, nullptr);
  EXPECT_GT(step->kernels(), 100u);  // every layer forward and backward, the loss, AdamW
  EXPECT_EQ(device_work_counts().graph_launches - before_capture.graph_launches, 1u);
  run.queue_step();
  run.resolve();
  const AllocatorStats mem_before = CudaCachingAllocator::instance().stats();
  const DeviceWorkCounts before = device_work_counts();
  run.queue_step();  // a warm replay, with the step before it read back
  run.resolve();
  const DeviceWorkCounts after = device_work_counts();
  const AllocatorStats mem_after = CudaCachingAllocator::instance().stats();
  std::printf("a replayed step: 1 graph of %llu kernels (%.1f MiB reserved), %llu copies\n",
              static_cast<unsigned long long>(step->kernels()),
              static_cast<double>(step->pool_bytes()) / (1 << 20),
              static_cast<unsigned long long>(after.copies - before.copies));
  EXPECT_EQ(after.graph_launches - before.graph_launches, 1u);
  EXPECT_EQ(after.launches, before.launches);
  EXPECT_EQ(after.memsets, before.memsets);
  EXPECT_EQ(after.host_syncs, before.host_syncs);
  EXPECT_EQ(after.late_reads - before.late_reads, 1u);
  // the batch (up, then into the fixed buffer), the step inputs, t (i32 and f32), the
  // importance weights (the summary's read-back is a late read, not a copy counted here)
  EXPECT_EQ(after.copies - before.copies, 6u);
  EXPECT_EQ(mem_after.device_mallocs, mem_before.device_mallocs);
  EXPECT_GT(step->pool_bytes(), 0u);
  run.resolve();
}

TEST(CudaGraph, ABatchUnlikeTheCapturedOneIsAnError) {
  REQUIRE_GPU();
  ImageRun run(graph_config(true));
  for (int i = 0; i <= DiffusionTrainer::kEagerStepsBeforeCapture; ++i) run.step();
  ASSERT_NE(run.trainer().captured_step(), nullptr);
  const Tensor other = Tensor::zeros(Shape{2, 32, 32, 3}, DType::U8, Device::CUDA);
  test::expect_error([&] { run.trainer().queue_step(run.denoiser(), TrainBatch{other}); },
                     {"cuda_graph", "captured for a batch", "(2, 32, 32, 3)"});
}

// A checkpoint loaded into a run (set_step_index, set_steps_taken) drops the captured step:
// the next steps are eager (refreshing the optimiser's device counters), then captured anew.
TEST(CudaGraph, MovingTheRunToAnotherStepDropsTheCapture) {
  REQUIRE_GPU();
  ImageRun run(graph_config(true));
  for (int i = 0; i <= DiffusionTrainer::kEagerStepsBeforeCapture; ++i) run.step();
  ASSERT_NE(run.trainer().captured_step(), nullptr);
  run.trainer().set_step_index(run.trainer().step_index() + 5);  // what a checkpoint load does
  run.trainer().optimizer().set_steps_taken(1);
  EXPECT_EQ(run.trainer().captured_step(), nullptr);
  const DeviceWorkCounts before = device_work_counts();
  run.step();  // eager: it launches kernels, no graph
  EXPECT_EQ(device_work_counts().graph_launches, before.graph_launches);
  EXPECT_GT(device_work_counts().launches, before.launches);
  EXPECT_EQ(run.trainer().optimizer().steps_taken(), 2);
}

TEST(CudaGraph, AnUploadInsideACaptureIsAnError) {
  REQUIRE_GPU();
  CudaGraph graph;
  test::expect_error(
      [&] {
        graph.capture([] {
          (void)Tensor::from_vector<float>(Shape{4}, {1, 2, 3, 4}).to(Device::CUDA);
        });
      },
      {"from the host", "captured CUDA graph", "fixed buffer"});
  EXPECT_FALSE(graph.captured());
  EXPECT_FALSE(engine_stream_capturing());  // the failed capture was ended
}

// Blocks allocated in a pool go back to it, and nothing outside the pool is handed them;
// released, the pool's free blocks join the shared cache.
TEST(CudaGraph, APoolKeepsItsBlocksUntilReleased) {
  REQUIRE_GPU();
  CudaCachingAllocator& a = CudaCachingAllocator::instance();
  const size_t bytes = 3 * 4096 + 512;  // a size no other test caches
  const PoolId pool = a.create_pool();
  void* in_pool = nullptr;
  {
    PoolScope scope(pool);
    in_pool = a.allocate(bytes);
  }
  EXPECT_EQ(a.pool_bytes(pool), CudaCachingAllocator::round_size(bytes));
  a.release(in_pool);
  void* outside = a.allocate(bytes);
  EXPECT_NE(outside, in_pool);  // the pool's free block is not the shared cache's
  {
    PoolScope scope(pool);
    void* again = a.allocate(bytes);
    EXPECT_EQ(again, in_pool);  // but the pool's own allocations get it back
    a.release(again);
  }
  a.release(outside);
  a.release_pool(pool);
  EXPECT_EQ(a.pool_bytes(pool), 0u);
  void* first = a.allocate(bytes);
  void* second = a.allocate(bytes);
  EXPECT_TRUE(first == in_pool || second == in_pool);  // now in the shared cache
  a.release(first);
  a.release(second);
  {
    PoolScope scope(pool);
    test::expect_error([&] { (void)a.allocate(bytes); }, {"memory pool", "released"});
  }
}
#endif

// The keys a captured step cannot work with are refused when the config is read.
TEST(CudaGraph, ConfigsThatCannotBeCapturedAreErrors) {
  test::expect_error([] { test::small_unet_config("cuda", "fp32", {"cuda_graph=true",
                                                                   "fused_loss=false"}); },
                     {"cuda_graph", "fused loss"});
  test::expect_error([] { test::small_unet_config("cuda", "fp32", {"cuda_graph=true",
                                                                   "profile_steps=3"}); },
                     {"cuda_graph", "profile_steps"});
  EXPECT_TRUE(test::small_unet_config("cpu", "fp32", {"cuda_graph=true", "profile_steps=3"})
                  .trainer.cuda_graph);  // on the CPU: a note at run time, not an error
}

}  // namespace
}  // namespace ddpm
