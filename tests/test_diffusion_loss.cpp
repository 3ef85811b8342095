// The fused corrupt-and-MSE diffusion loss against the unfused chain the trainer runs on the
// tape (randn, make_x_t, target_from, mse_per_sample, weights, sum; backward), for every
// target x every weighting (simple, vlb, hybrid, each with and without importance weights);
// its gradient against central differences; eps regenerated in the loss equal, bit for bit,
// to the eps of the corruption and to randn; bytes decoded and flipped in-kernel equal to the
// batcher's floats; the trainer's two paths; bad inputs. CudaDiffusionLoss.* holds the CUDA
// kernels to the CPU reference and skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/ops.h"
#include "engine/philox.h"
#include "models/data/image_dataset.h"
#include "models/data/synthetic_images.h"
#include "models/ddpm/losses.h"
#include "models/ddpm/parameterization.h"
#include "models/ddpm/schedule.h"
#include "models/ddpm/trainer.h"
#include "models/unet/image_train.h"
#include "engine/file_io.h"
#if DDPM_WITH_CUDA
#include "kernels/cuda/diffusion_loss.cuh"
#endif
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::random_tensor;
using test::values;

constexpr uint64_t kSeed = 77, kStream = 0x7200000000000005ull;

struct Case {
  Target target;
  LossKind loss;
  bool importance;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Target t : {Target::Epsilon, Target::X0, Target::V})
    for (LossKind l : {LossKind::Simple, LossKind::Vlb, LossKind::Hybrid})
      for (bool imp : {false, true}) cases.push_back({t, l, imp});
  return cases;
}

std::string describe(const Case& c) {
  return std::string(target_name(c.target)) + "/" + loss_kind_name(c.loss) +
         (c.importance ? "/importance" : "");
}

// A batch of the DDPM setup: T = 1000 linear schedule, timesteps spread over [0, T) including
// both ends (where the vlb weight is largest / the signal smallest).
struct Problem {
  Schedule schedule = make_schedule(ScheduleConfig{});
  std::vector<double> weights;
  std::vector<int> t;
  std::vector<double> importance;
  Tensor x0, pred;
  Case c;

  Problem(const Case& cs, const Shape& shape, DType dtype) : c(cs) {
    LossConfig lc;
    lc.kind = cs.loss;
    lc.vlb_clamp = 1e4;  // the eps-target vlb weight at t = 0 is ~1e3 (finite; clamp unused)
    weights = loss_weights(schedule, cs.target, lc);
    const int64_t n = shape[0];
    for (int64_t j = 0; j < n; ++j) t.push_back(static_cast<int>((j * 997 + 13 * (j % 2)) % 1000));
    t[0] = 0;
    t[n - 1] = 999;
    if (cs.importance)
      for (int64_t j = 0; j < n; ++j) importance.push_back(0.5 + 0.25 * static_cast<double>(j % 5));
    x0 = random_tensor(shape, 11, dtype, 0.6);
    pred = random_tensor(shape, 12, dtype);
  }

  DiffusionLossSpec spec(Device d) const {
    const DType dt = pred.dtype();
    const auto up = [&](const std::vector<double>& v) {
      return Tensor::from_vector<double>(Shape{static_cast<int64_t>(v.size())}, v).to(dt).to(d);
    };
    DiffusionLossSpec s;
    s.target = to_diffusion_target(c.target);
    s.sqrt_abar = up(schedule.sqrt_alpha_bar);
    s.sqrt_one_minus_abar = up(schedule.sqrt_one_minus_alpha_bar);
    s.weight = up(weights);
    s.noise_seed = kSeed;
    s.noise_stream = kStream;
    return s;
  }
  Tensor importance_tensor(Device d) const {
    if (importance.empty()) return Tensor();
    return Tensor::from_vector<double>(Shape{static_cast<int64_t>(importance.size())}, importance)
        .to(pred.dtype())
        .to(d);
  }
};

struct Result {
  std::vector<double> x_t, per_sample, grad;
  double loss = 0;
};

Result fused(const Problem& p, Device d) {
  const DiffusionLossSpec spec = p.spec(d);
  const Tensor t = timestep_tensor(p.t, p.schedule.T, d);
  const Tensor x0 = p.x0.to(d);
  Result r;
  r.x_t = values(diffusion_corrupt(x0, t, spec));
  const FusedDiffusionLoss f = diffusion_loss_fused(p.pred.to(d), x0, t, p.importance_tensor(d), spec);
  r.per_sample = values(f.per_sample);
  r.loss = f.loss.to(Device::CPU).item();
  r.grad = values(f.dpred);
  return r;
}

// The chain DiffusionTrainer runs with "fused_loss": false.
Result unfused(const Problem& p, Device d) {
  const NoiseLevels lv = NoiseLevels::at(p.schedule, p.t);
  const Tensor x0 = p.x0.to(d);
  const Tensor eps = randn(x0.shape(), kSeed, kStream, d).to(x0.dtype());
  Tensor pred = p.pred.clone().to(d);
  pred.set_requires_grad(true);
  Result r;
  r.x_t = values(make_x_t(lv, x0, eps));
  LossResult lr = diffusion_loss(pred, target_from(p.c.target, lv, x0, eps), p.t, p.weights,
                                 p.importance);
  r.per_sample = lr.per_sample;
  r.loss = lr.loss.to(Device::CPU).item();
  backward(lr.loss);
  r.grad = values(pred.grad());
  return r;
}

// |a - b| <= rtol * max|b| elementwise; b must not be all zero.
void expect_near_rel(const std::vector<double>& a, const std::vector<double>& b, double rtol,
                     const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  ASSERT_GT(scale, 0.0) << what << " is all zeros";
  int reported = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= rtol * scale) && reported++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << a[i] << " vs " << b[i];
}

// Fused and unfused agree on one device. x_t: the same float products and sums in the same
// order (kernels/diffusion_loss_math.h), so the same bits. Losses: the fused kernel sums
// squares in double (CPU) where mse_per_sample sums in double too, then both round: 1e-6 of
// the largest value in f32 (a few ulp), 1e-12 in f64. Gradient: scale * diff against
// (2 diff / dim) * weight: the same factors, rounded in a different order (2 ulp).
void expect_fused_matches_unfused(Device d, DType dtype, const Shape& shape) {
  const double rtol = dtype == DType::F32 ? 1e-6 : 1e-12;
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(describe(c));
    const Problem p(c, shape, dtype);
    const Result f = fused(p, d), u = unfused(p, d);
    EXPECT_EQ(f.x_t, u.x_t);
    expect_near_rel(f.per_sample, u.per_sample, rtol, "per-sample loss");
    EXPECT_NEAR(f.loss, u.loss, rtol * std::fabs(u.loss));
    expect_near_rel(f.grad, u.grad, rtol, "gradient");
  }
}

TEST(DiffusionLoss, FusedMatchesTheUnfusedChainOnTheCpu) {
  expect_fused_matches_unfused(Device::CPU, DType::F32, Shape{5, 6, 7, 3});
  expect_fused_matches_unfused(Device::CPU, DType::F64, Shape{4, 3, 5, 3});
}

// d(loss)/d(pred) written by the forward pass against central differences of the loss the
// same kernel reports, in f64: the loss is quadratic in pred, so the central difference is
// exact up to rounding (h = 1e-3; error ~ 1e-16 * loss / h).
TEST(DiffusionLoss, GradientMatchesFiniteDifferences) {
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(describe(c));
    Problem p(c, Shape{3, 4, 5, 3}, DType::F64);
    const Result base = fused(p, Device::CPU);
    const double h = 1e-3;
    for (int64_t i : {int64_t{0}, int64_t{17}, int64_t{59}, int64_t{60}, int64_t{179}}) {
      double* v = p.pred.data<double>();
      const double orig = v[i];
      v[i] = orig + h;
      const double up = fused(p, Device::CPU).loss;
      v[i] = orig - h;
      const double down = fused(p, Device::CPU).loss;
      v[i] = orig;
      EXPECT_NEAR(base.grad[i], (up - down) / (2 * h), 1e-7 * std::max(1.0, std::fabs(base.grad[i])))
          << "element " << i;
    }
  }
}

// With tables sqrt_abar = 0, sqrt(1 - abar) = 1, x_t = 0 * x0 + eps is eps exactly; with
// the weight -n dim / 2 the gradient scale is exactly -1, so for pred = 0 the epsilon
// loss's gradient is -1 * (0 - eps) = eps exactly. Both must equal randn at the same
// position bit for bit: the loss regenerates the corruption's eps, nothing stored.
void expect_eps_regenerated(Device d) {
  const Shape shape{3, 4, 6, 3};
  const int64_t n = shape[0], dim = 4 * 6 * 3;
  DiffusionLossSpec spec;
  spec.sqrt_abar = Tensor::zeros(Shape{2}, DType::F32, d);
  spec.sqrt_one_minus_abar = Tensor::full(Shape{2}, 1.0, DType::F32, d);
  spec.weight = Tensor::full(Shape{2}, -0.5 * n * dim, DType::F32, d);
  spec.noise_seed = kSeed;
  spec.noise_stream = kStream;
  const Tensor t = timestep_tensor({0, 1, 0}, 2, d);
  const Tensor x0 = random_tensor(shape, 3, DType::F32).to(d);
  const std::vector<float> eps = randn(shape, kSeed, kStream).to_vector<float>();
  const std::vector<float> corrupt_eps =
      diffusion_corrupt(x0, t, spec).to(Device::CPU).to_vector<float>();
  const std::vector<float> loss_eps =
      diffusion_loss_fused(Tensor::zeros(shape, DType::F32, d), x0, t, Tensor(), spec)
          .dpred.to(Device::CPU)
          .to_vector<float>();
  ASSERT_EQ(0, std::memcmp(corrupt_eps.data(), eps.data(), eps.size() * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(loss_eps.data(), eps.data(), eps.size() * sizeof(float)));
}

TEST(DiffusionLoss, LossRegeneratesTheCorruptionsEpsBitForBit) { expect_eps_regenerated(Device::CPU); }

// Images whose rows are not whole quads of bytes (W C % 4 != 0), so that the CUDA kernels'
// quads of bytes (kernels/cuda/diffusion_loss.cu) cross pixels and rows, and with one channel
// every element is its own pixel; the bytes take many of the 256 values.
class OddImages : public ImageDataset {
 public:
  OddImages(int64_t h, int64_t w, int64_t c) : h_(h), w_(w), c_(c) {}
  int64_t size() const override { return 64; }
  int64_t height() const override { return h_; }
  int64_t width() const override { return w_; }
  int64_t channels() const override { return c_; }
  void get(int64_t i, uint8_t* out) const override {
    for (int64_t k = 0; k < h_ * w_ * c_; ++k)
      out[k] = static_cast<uint8_t>((i * 61 + k * 7) % 256);
  }

 private:
  int64_t h_, w_, c_;
};

// The datasets the bytes tests run: the synthetic 32x32 RGB images, 4x5 RGB (a row is 15
// bytes), 4x7 grey (7), and 3x3 RGB, whose 27 bytes a sample are not whole quads: the CUDA
// kernels' element-by-element path (found untested by Emulated.LaunchCoverage).
std::vector<std::shared_ptr<const ImageDataset>> byte_datasets() {
  return {std::make_shared<SyntheticImages>(64, 5), std::make_shared<OddImages>(4, 5, 3),
          std::make_shared<OddImages>(4, 7, 1), std::make_shared<OddImages>(3, 3, 3)};
}

// Bytes decoded (u / 127.5 - 1) and mirrored in the kernel give the batcher's float batch
// exactly, so x_t and the loss are the same bits either way. The batch mirrors some of its
// samples and not others (checked: the flip rule's draws).
void expect_bytes_match_floats(Device d, std::shared_ptr<const ImageDataset> data) {
  SCOPED_TRACE(std::to_string(data->height()) + "x" + std::to_string(data->width()) + "x" +
               std::to_string(data->channels()));
  ImageBatcher batcher(data, 6, 9, /*random_flip=*/true);
  const int64_t step = 3;
  const Tensor floats = batcher.batch(step);
  const ImageBatcher::Bytes bytes = batcher.batch_bytes(step);
  int mirrored = 0;
  for (uint64_t j = 0; j < 6; ++j)
    mirrored += philox_uniform(bytes.flip_seed, bytes.flip_stream, bytes.flip_first + j) < 0.5f;
  ASSERT_TRUE(bytes.flip && mirrored > 0 && mirrored < 6) << mirrored << " of 6 mirrored";
  for (Target target : {Target::X0, Target::V}) {
    Problem p({target, LossKind::Simple, false}, floats.shape(), DType::F32);
    p.x0 = floats;
    DiffusionLossSpec from_bytes = p.spec(d);
    from_bytes.flip = bytes.flip;
    from_bytes.flip_seed = bytes.flip_seed;
    from_bytes.flip_stream = bytes.flip_stream;
    from_bytes.flip_first = bytes.flip_first;
    const Tensor t = timestep_tensor(p.t, p.schedule.T, d);
    const Tensor u8 = bytes.images.to(d), f32 = floats.to(d), pred = p.pred.to(d);
    EXPECT_EQ(values(diffusion_corrupt(u8, t, from_bytes)), values(diffusion_corrupt(f32, t, p.spec(d))));
    const FusedDiffusionLoss a = diffusion_loss_fused(pred, u8, t, Tensor(), from_bytes);
    const FusedDiffusionLoss b = diffusion_loss_fused(pred, f32, t, Tensor(), p.spec(d));
    EXPECT_EQ(values(a.dpred), values(b.dpred));
    EXPECT_EQ(values(a.per_sample), values(b.per_sample));
  }
}

TEST(DiffusionLoss, BytesDecodedAndFlippedInKernelMatchTheBatcher) {
  for (const auto& data : byte_datasets()) expect_bytes_match_floats(Device::CPU, data);
}

// Fixed-order sums only (no atomics, no thread-count-dependent order): the same bits twice.
void expect_two_runs_identical(Device d) {
  const Problem p({Target::V, LossKind::Hybrid, true}, Shape{16, 32, 32, 3}, DType::F32);
  const Result a = fused(p, d), b = fused(p, d);
  EXPECT_EQ(a.x_t, b.x_t);
  EXPECT_EQ(a.per_sample, b.per_sample);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.grad, b.grad);
}

TEST(DiffusionLoss, TwoRunsGiveTheSameBits) { expect_two_runs_identical(Device::CPU); }

TEST(DiffusionLoss, BadInputsNameTheProblem) {
  const Problem p({Target::V, LossKind::Simple, false}, Shape{2, 3, 3, 3}, DType::F32);
  const DiffusionLossSpec spec = p.spec(Device::CPU);
  const Tensor t = timestep_tensor({0, 5}, 1000, Device::CPU);
  test::expect_error([&] { timestep_tensor({0, 1000}, 1000, Device::CPU); },
                     {"t[1] = 1000", "[0, 1000)"});
  test::expect_error([&] { diffusion_corrupt(p.x0, timestep_tensor({0}, 1000, Device::CPU), spec); },
                     {"diffusion_corrupt", "t must be (2) i32"});
  test::expect_error(
      [&] { diffusion_loss_fused(random_tensor({2, 3, 3, 2}, 1, DType::F32), p.x0, t, Tensor(), spec); },
      {"diffusion_loss_fused", "differ in shape"});
  test::expect_error([&] { diffusion_corrupt(p.x0.to(DType::F64), t, spec); }, {"differ in dtype"});
  DiffusionLossSpec flip = spec;
  flip.flip = true;
  test::expect_error([&] { diffusion_corrupt(p.x0, t, flip); }, {"random flip", "u8"});
  DiffusionLossSpec short_table = spec;
  short_table.weight = Tensor::zeros(Shape{10}, DType::F32);
  test::expect_error([&] { diffusion_corrupt(p.x0, t, short_table); }, {"different lengths"});
}

// tiny.json at 8 channels (batch 2, attention at 8x8 under DDPM_TEST_SMALL_SHAPES).
ImageTrainConfig tiny(bool fused_loss, const std::string& device, const std::string& sampler) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  std::vector<std::string> overrides{"base_channels=8", "groups=4", "batch_size=4", "steps=4",
                                     "fused_loss=" + std::string(fused_loss ? "true" : "false"),
                                     "device=" + device, "timestep_sampler=" + sampler,
                                     "target=v", "loss=hybrid"};
  if (test::small_shapes_only())
    for (const char* o : {"batch_size=2", "channel_mult=[1,2,2]", "attention_resolutions=[8]"})
      overrides.push_back(o);
  for (const std::string& o : overrides) apply_override(j, o);
  return read_image_train_config(j, "tiny.json (test)");
}

// The whole trainer on both paths: the fused one is fed raw bytes (decoded and flipped in the
// kernel), the unfused one the batcher's floats. Same timesteps, noise, dropout; only the
// loss's rounding differs (above), which Adam then carries: the same bound as the CPU vs
// CUDA trajectory test (tests/test_cuda_model.cpp).
void expect_trainer_paths_agree(const std::string& device) {
  for (const char* sampler : {"uniform", "importance"}) {
    SCOPED_TRACE(sampler);
    ImageRun a(tiny(true, device, sampler)), b(tiny(false, device, sampler));
    for (int i = 0; i < 4; ++i) {
      const double la = a.step().loss, lb = b.step().loss;
      EXPECT_NEAR(la, lb, 1e-4 * lb) << "step " << i;
    }
    const std::vector<float> wa = a.store().flat_data().to(Device::CPU).to_vector<float>();
    const std::vector<float> wb = b.store().flat_data().to(Device::CPU).to_vector<float>();
    for (size_t i = 0; i < wa.size(); ++i) ASSERT_NEAR(wa[i], wb[i], 1e-4) << "weight " << i;
  }
}

TEST(DiffusionLoss, TrainerFusedAndUnfusedPathsAgree) { expect_trainer_paths_agree("cpu"); }

TEST(DiffusionLoss, UnfusedPathRejectsBytes) {
  ImageRun run(tiny(false, "cpu", "uniform"));
  const Tensor bytes = Tensor::zeros(Shape{4, 32, 32, 3}, DType::U8);
  test::expect_error([&] { run.trainer().step(run.denoiser(), TrainBatch{bytes}); },
                     {"unfused loss", "u8"});
}

// ---- CUDA against the CPU reference ----

// x_t and dpred: every operation is a single correctly rounded float op on both sides and eps
// is bit-identical (engine/philox.h), so the same bits. per_sample and loss: float partial
// sums of up to 1024 squares (2048 in the deep mapping) in a tree, then over chunks, against
// double sums on the CPU: 1e-5 relative (dim up to 12288: sqrt(#terms) ulp growth, ~7e-6).
void expect_cuda_matches_cpu(const Shape& shape) {
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(describe(c) + " " + shape.str());
    const Problem p(c, shape, DType::F32);
    const Result cpu = fused(p, Device::CPU), gpu = fused(p, Device::CUDA);
    EXPECT_EQ(gpu.x_t, cpu.x_t);
    EXPECT_EQ(gpu.grad, cpu.grad);
    expect_near_rel(gpu.per_sample, cpu.per_sample, 1e-5, "per-sample loss");
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-5 * std::fabs(cpu.loss));
  }
}

TEST(CudaDiffusionLoss, MatchesTheCpuReference) {
  REQUIRE_GPU();
  expect_cuda_matches_cpu(Shape{5, 6, 7, 3});     // dim 126: not a multiple of 4 (scalar path)
  expect_cuda_matches_cpu(Shape{3, 32, 32, 3});   // CIFAR images: 3 chunks, 16-byte path
  expect_cuda_matches_cpu(Shape{2, 64, 64, 3});   // 12 chunks per sample
  expect_cuda_matches_cpu(Shape{1, 1025});        // one element past a chunk
  expect_cuda_matches_cpu(Shape{1, 40000});       // 40 chunks: the finish's lanes take two
  expect_cuda_matches_cpu(Shape{40, 2, 2, 3});    // 40 samples: its warps take two
}

// The CUDA kernels' mapping by the batch's size, shape arithmetic only (no device): one quad a
// thread (chunks of 1024 elements) below 2^22 elements of the batch, two (2048) from there.
TEST(DiffusionLoss, TheCudaKernelsMappingFollowsTheBatchSize) {
#if DDPM_WITH_CUDA
  const auto shape = [](int64_t n, int64_t dim) {
    DiffusionLossShape s;
    s.n = n;
    s.dim = dim;
    return s;
  };
  const auto chunks = [&](int64_t n, int64_t dim) { return cuda::loss_chunks(shape(n, dim)); };
  const DiffusionLossShape cifar = shape(128, 3072), big = shape(64, 196608);
  EXPECT_EQ(cuda::diffusion_loss_quads(cifar), 1);
  EXPECT_EQ(chunks(128, 3072), 3);    // the CIFAR-10 step
  EXPECT_EQ(chunks(1365, 3072), 3);   // 4,193,280 elements, one sample short of 2^22
  EXPECT_EQ(chunks(1366, 3072), 2);   // 4,196,352
  EXPECT_EQ(cuda::diffusion_loss_quads(big), 2);
  EXPECT_EQ(chunks(64, 196608), 96);  // kernel-bench's 64x256x256x3
  {
    const cuda::ForcedLossQuads deep(2);
    EXPECT_EQ(cuda::diffusion_loss_quads(cifar), 2);
    EXPECT_EQ(chunks(128, 3072), 2);
  }
  {
    const cuda::ForcedLossQuads shallow(1);
    EXPECT_EQ(cuda::diffusion_loss_quads(big), 1);
    EXPECT_EQ(chunks(64, 196608), 192);
  }
  EXPECT_EQ(cuda::diffusion_loss_quads(big), 2);  // by size again
  EXPECT_EQ(chunks(64, 196608), 96);
  test::expect_error([] { cuda::set_diffusion_loss_quads(4); }, {"4 quads", "1 and 2"});
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

// The deep mapping (forced, at sizes the emulation runs quickly) held to the CPU like the
// shallow one: x_t and dpred the same bits, so also the shallow mapping's bits. Shapes around
// its chunk of 2048 elements: a sample of 1.5 chunks (the last chunk's second quads past
// dim), one quad into a second chunk, the element-wise path inside a chunk and one element
// into a second, whole chunks; then the bytes with the flip, eps regenerated, two runs.
TEST(CudaDiffusionLoss, TheDeepMappingMatchesTheCpuReference) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  const cuda::ForcedLossQuads deep(2);
  expect_cuda_matches_cpu(Shape{3, 32, 32, 3});
  expect_cuda_matches_cpu(Shape{2, 2052});
  expect_cuda_matches_cpu(Shape{5, 6, 7, 3});
  expect_cuda_matches_cpu(Shape{1, 2049});
  expect_cuda_matches_cpu(Shape{2, 64, 64, 3});
  for (const auto& data : byte_datasets()) expect_bytes_match_floats(Device::CUDA, data);
  expect_eps_regenerated(Device::CUDA);
  expect_two_runs_identical(Device::CUDA);
#endif
}

TEST(CudaDiffusionLoss, FusedMatchesTheUnfusedChainOnTheGpu) {
  REQUIRE_GPU();
  expect_fused_matches_unfused(Device::CUDA, DType::F32, Shape{5, 6, 7, 3});
  expect_fused_matches_unfused(Device::CUDA, DType::F32, Shape{4, 32, 32, 3});
}

TEST(CudaDiffusionLoss, LossRegeneratesTheCorruptionsEpsBitForBit) {
  REQUIRE_GPU();
  expect_eps_regenerated(Device::CUDA);
}

TEST(CudaDiffusionLoss, BytesDecodedAndFlippedInKernelMatchTheBatcher) {
  REQUIRE_GPU();
  for (const auto& data : byte_datasets()) expect_bytes_match_floats(Device::CUDA, data);
}

TEST(CudaDiffusionLoss, TwoRunsGiveTheSameBits) {
  REQUIRE_GPU();
  expect_two_runs_identical(Device::CUDA);
}

TEST(CudaDiffusionLoss, TrainerFusedAndUnfusedPathsAgree) {
  REQUIRE_GPU();
  expect_trainer_paths_agree("cuda");
}

}  // namespace
}  // namespace ddpm
