// kernel-bench loss: the fused corrupt-and-MSE diffusion loss against the unfused chain of
// engine ops the trainer runs with "fused_loss": false (what a framework launches), at the
// CIFAR-10 batch (128x32x32x3) and at 64x256x256x3, for the epsilon and v targets.
//
// Rows (E = elements of the batch, f32 = 4 bytes):
//   corrupt  fused f32 x0      reads x0, writes x_t                       min 8E bytes
//   corrupt  fused u8 x0+flip  reads bytes, writes x_t                    min 5E
//   corrupt  unfused           randn (writes eps 4E), make_x_t (reads x0, eps, writes x_t
//                              12E) + 2 coefficient uploads               16E moved
//   loss     fused             reads pred (+ x0 for v), writes dpred      min 8E (v: 12E)
//   loss     unfused           target_from (v: reads eps, x0, writes 12E), mse_per_sample
//                              (reads pred, target 8E), the per-sample mse to the host and
//                              weights back, mul, sum; backward: memset of dpred (4E),
//                              mse backward (reads pred, target, read-modify-writes dpred 16E)
//                                                                         28E moved (v: 40E)
//   step     fused / unfused   both of the above plus the host transfers a training step
//                              makes (timesteps up, per-sample losses and the loss down)
// The fused kernels move one quad of 4 elements a thread below 2^22 elements of the batch,
// two from there (kernels/cuda/diffusion_loss.cu); the fused corrupt (f32 x0) and loss rows
// are measured once more on the mapping the size does not choose ("..., one quad a thread"
// or "..., two quads a thread"), so that a run shows what the choice buys at each size.
// "moved" counts each kernel's operands (a model; Nsight Compute's dram__bytes measures the
// hardware figure: docs/fused-loss.md gives the command). GB/s and the fraction of peak use
// the *minimum* bytes: the useful bandwidth. Launches, memsets and copies are counted by the
// engine (device_work_counts) over one call. Every timed call sits in an NVTX range named
// like its row, so Nsight Systems / Compute show it by name.
#include <cstdio>
#include <string>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "kernels/cuda/diffusion_loss.cuh"
#include "models/ddpm/losses.h"
#include "models/ddpm/parameterization.h"
#include "models/ddpm/schedule.h"

namespace ddpm::bench {

namespace {

constexpr uint64_t kSeed = 1, kNoiseStream = 0x7200000000000000ull, kFlipStream = 0xB100;

struct Batch {
  Shape shape;
  Target target;
  Schedule schedule = make_schedule(ScheduleConfig{});
  std::vector<double> weights;
  std::vector<int> t;
  Tensor x0, bytes, pred;
  DiffusionLossSpec spec, byte_spec;

  Batch(const Shape& s, Target tg) : shape(s), target(tg) {
    weights = loss_weights(schedule, target, LossConfig{});
    for (int64_t j = 0; j < s[0]; ++j) t.push_back(static_cast<int>((j * 7919) % schedule.T));
    x0 = scale(randn(s, kSeed, 1, Device::CUDA), 0.5);
    bytes = Tensor::full(s, 77.0, DType::U8, Device::CUDA);
    pred = randn(s, kSeed, 2, Device::CUDA);
    const auto up = [](const std::vector<double>& v) {
      return Tensor::from_vector<double>(Shape{static_cast<int64_t>(v.size())}, v)
          .to(DType::F32)
          .to(Device::CUDA);
    };
    spec.target = to_diffusion_target(target);
    spec.sqrt_abar = up(schedule.sqrt_alpha_bar);
    spec.sqrt_one_minus_abar = up(schedule.sqrt_one_minus_alpha_bar);
    spec.weight = up(weights);
    spec.noise_seed = kSeed;
    spec.noise_stream = kNoiseStream;
    byte_spec = spec;
    byte_spec.flip = true;
    byte_spec.flip_seed = kSeed;
    byte_spec.flip_stream = kFlipStream;
  }
  double elements() const { return static_cast<double>(shape.numel()); }
};

// One measured variant: time, and the engine's work counts over one call.
struct Measured {
  double ms = 0;
  DeviceWorkCounts work;
};

Measured measure(Timer& timer, const char* range, const std::function<void()>& fn) {
  const auto call = [&] {
    ProfileRange r(range);
    fn();
  };
  Measured m;
  const DeviceWorkCounts before = device_work_counts();
  call();
  device_synchronize(Device::CUDA);
  const DeviceWorkCounts after = device_work_counts();
  m.work = {after.launches - before.launches, after.memsets - before.memsets,
            after.copies - before.copies};
  m.ms = timer.median_ms(call);
  return m;
}

Row& add(Report& report, const std::string& kernel, const Batch& b, const std::string& variant,
         const Measured& m, double min_bytes_per_elem, double moved_bytes_per_elem) {
  Row& row = report.add_bytes(kernel, b.shape.str() + " " + target_name(b.target), variant, m.ms,
                              min_bytes_per_elem * b.elements());
  row.extra = {{"min_bytes", min_bytes_per_elem * b.elements()},
               {"operand_bytes", moved_bytes_per_elem * b.elements()},
               {"launches", m.work.launches},
               {"memsets", m.work.memsets},
               {"copies", m.work.copies}};
  return row;
}

}  // namespace

void bench_loss(const Options& o, Timer& timer, Report& report) {
  struct Line {
    std::string shape;
    double fused_ms, unfused_ms, fused_loss_ms, unfused_loss_ms, loss_gbs, loss_fraction;
    uint64_t fused_launches, unfused_launches;
  };
  std::vector<Line> lines;
  const std::vector<Shape> shapes = o.smoke ? std::vector<Shape>{Shape{4, 8, 8, 3}}
                                            : std::vector<Shape>{Shape{128, 32, 32, 3},
                                                                 Shape{64, 256, 256, 3}};
  for (const Shape& shape : shapes) {
    for (Target target : {Target::Epsilon, Target::V}) {
      const Batch b(shape, target);
      const bool v = target == Target::V;
      const Tensor t = timestep_tensor(b.t, b.schedule.T, Device::CUDA);
      const NoiseLevels lv = NoiseLevels::at(b.schedule, b.t);

      const Measured corrupt = measure(timer, "corrupt fused (f32 x0)", [&] {
        diffusion_corrupt(b.x0, t, b.spec);
      });
      add(report, "corrupt", b, "fused f32 x0", corrupt, 8, 8);
      const Measured corrupt_u8 = measure(timer, "corrupt fused (u8 x0, flip)", [&] {
        diffusion_corrupt(b.bytes, t, b.byte_spec);
      });
      add(report, "corrupt", b, "fused u8 x0 + flip", corrupt_u8, 5, 5);
      // the fused corrupt and loss again on the other mapping
      DiffusionLossShape mapped;
      mapped.n = shape[0];
      mapped.dim = shape.numel() / shape[0];
      const int other = cuda::diffusion_loss_quads(mapped) == 1 ? 2 : 1;
      const std::string other_name = other == 1 ? "one quad a thread" : "two quads a thread";
      Measured corrupt_other, loss_other;
      {
        const cuda::ForcedLossQuads forced(other);
        corrupt_other = measure(timer, ("corrupt fused (f32 x0), " + other_name).c_str(), [&] {
          diffusion_corrupt(b.x0, t, b.spec);
        });
        loss_other = measure(timer, ("loss fused, " + other_name).c_str(), [&] {
          diffusion_loss_fused(b.pred, b.x0, t, Tensor(), b.spec);
        });
      }
      add(report, "corrupt", b, "fused f32 x0, " + other_name, corrupt_other, 8, 8);
      const Measured corrupt_unfused = measure(timer, "corrupt unfused", [&] {
        const Tensor eps = randn(b.shape, kSeed, kNoiseStream, Device::CUDA);
        make_x_t(lv, b.x0, eps);
      });
      add(report, "corrupt", b, "unfused chain", corrupt_unfused, 8, 16);

      const Measured loss = measure(timer, "loss fused", [&] {
        diffusion_loss_fused(b.pred, b.x0, t, Tensor(), b.spec);
      });
      // The unfused loss starts from the stored eps, as the chain would have it.
      const Tensor eps = randn(b.shape, kSeed, kNoiseStream, Device::CUDA);
      Tensor pred = b.pred.clone();
      pred.set_requires_grad(true);
      const Measured loss_unfused = measure(timer, "loss unfused", [&] {
        pred.zero_grad();  // a fresh gradient buffer, as for a layer output in training
        LossResult r = diffusion_loss(pred, target_from(b.target, lv, b.x0, eps), b.t, b.weights, {});
        backward(r.loss);
      });
      // (the fused row's figures taken before the next add: a row reference lives only until
      // the report's next row, which may move them all; the smoke test's ASan caught one kept)
      Row& fused_row = add(report, "loss fwd+bwd", b, "fused", loss, v ? 12 : 8, v ? 12 : 8);
      fused_row.extra["speedup_vs_unfused"] = loss_unfused.ms / loss.ms;
      const double loss_gbs = fused_row.rate, loss_fraction = fused_row.fraction;
      add(report, "loss fwd+bwd", b, "unfused chain", loss_unfused, v ? 12 : 8, v ? 40 : 28);
      add(report, "loss fwd+bwd", b, "fused, " + other_name, loss_other, v ? 12 : 8, v ? 12 : 8);

      const Measured step = measure(timer, "step fused", [&] {
        const Tensor tt = timestep_tensor(b.t, b.schedule.T, Device::CUDA);
        diffusion_corrupt(b.x0, tt, b.spec);
        const FusedDiffusionLoss f = diffusion_loss_fused(b.pred, b.x0, tt, Tensor(), b.spec);
        f.per_sample.to(Device::CPU);
        f.loss.item();
      });
      add(report, "corrupt+loss step", b, "fused", step, v ? 20 : 16, v ? 20 : 16);
      const Measured step_unfused = measure(timer, "step unfused", [&] {
        const Tensor e = randn(b.shape, kSeed, kNoiseStream, Device::CUDA);
        make_x_t(lv, b.x0, e);
        pred.zero_grad();
        LossResult r = diffusion_loss(pred, target_from(b.target, lv, b.x0, e), b.t, b.weights, {});
        r.loss.item();
        backward(r.loss);
      });
      add(report, "corrupt+loss step", b, "unfused chain", step_unfused, v ? 20 : 16,
          v ? 56 : 44);
      lines.push_back({b.shape.str() + " " + target_name(target), step.ms, step_unfused.ms, loss.ms,
                       loss_unfused.ms, loss_gbs, loss_fraction,
                       step.work.launches + step.work.memsets,
                       step_unfused.work.launches + step_unfused.work.memsets});
    }
  }
  std::printf("\nfused diffusion loss vs the unfused chain (launches include memsets)\n");
  std::printf("%-26s %10s %10s %8s %12s %7s %14s %8s\n", "batch / target", "loss fused",
              "unfused", "speedup", "loss GB/s", "peak", "step fused/un", "launches");
  for (const Line& l : lines)
    std::printf("%-26s %8.4fms %8.4fms %7.2fx %12.1f %6.1f%% %6.3f/%6.3f %3llu/%-3llu\n",
                l.shape.c_str(), l.fused_loss_ms, l.unfused_loss_ms,
                l.unfused_loss_ms / l.fused_loss_ms, l.loss_gbs, 100 * l.loss_fraction,
                l.fused_ms, l.unfused_ms, static_cast<unsigned long long>(l.fused_launches),
                static_cast<unsigned long long>(l.unfused_launches));
}

}  // namespace ddpm::bench
