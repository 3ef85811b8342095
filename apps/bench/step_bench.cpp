// kernel-bench step: the CIFAR-10 model's whole training step (configs/cifar10_ddpm.json at
// --batch, synthetic data), in fp32 and bf16, queued kernel by kernel (~500 launches) and as
// one CUDA graph (cuda_graph: models/ddpm/captured_step.h). Per row: the median ms of a step
// from its queueing to its summary read back (ImageRun::step: queue, then resolve), so a GPU
// waiting for the host to queue the next kernel counts as time, the gap a graph closes;
// images per second; and what the host issued for one step (kernel launches, graph
// launches, memsets, copies, host syncs), printed and in the JSON rows. The graph rows'
// capture happens in the warm-up, before any step is timed. Each also with cuDNN's
// convolutions (cuda_conv: cudnn, in the same precision) and our everything else: the
// step-level ratio of our convolutions to the library's. fp32 once more, eager, with its
// convolutions on v4's bf16 GEMM in fp32's numbers (cuda_conv: bf16x6: three bf16 pieces an
// operand, six products). And the model FLOP utilisation:
// the step's matrix-product FLOPs (counted by the
// ops in an eager step, engine/flops.h: ~4.8 TFLOP at batch 128) per second, as a fraction of
// the device's dense peak for the precision (bf16 tensor cores, or fp32 FMA). The bf16 rows
// also with bf16 activations (activations: bf16) on v4, and that eager step once more with
// the weights' bf16 copy dropped (each product converting its weights, as before the copy:
// engine/weight_copy.h), the copy's gain, and once with the upsamplers as the reference
// model writes them (upsample_by_phase: false: upsample, then a 3x3 convolution of the map
// 4x as large), the gain of computing them by output phase; and on bf16 activations once on
// cuDNN's convolutions and once, eager and as a graph, on the faster of v4 and cuDNN per
// layer and pass (cuda_conv: auto, timed on the step's own operands: its choices are
// printed), the step the two kernels give together. And the peak GPU memory of the
// steps (the caching allocator's, from the run's construction on: weights, moments, EMA,
// activations, workspaces; cuBLAS's and cuDNN's own not included).
// Where convolution v5 runs (an H100 / H200 with sm_90a code), the bf16-activations step
// eager and as a graph once more on it (cuda_conv: wgmma), and eager once more with v5's
// schedules autotuned per layer (cuda_autotune: its 4-stage ring, with B by the copy
// engine, or 3 stages two blocks an SM; the choices are printed, the bits the same) and
// the attention's path too, the flash pair on wgmma among them (cuda_autotune_unverified:
// these rows run in the --only-sm90 process, where a trap ends only theirs): the gain is
// the ratio of the two eager rows. And eager and as a graph on v5's WgmmaIm2col,
// forced as kernel-bench conv's rows force it (the gathered operands by the copy engine's
// im2col mode, warp-specialised; not among the autotuner's choices until a GPU has passed
// its tests): the step the schedule would give, against the plain v5 rows.
// --smoke: the same variants on a U-Net of every layer kind at a fraction of the work
// (configs/tiny.json at 8 channels, 3 levels, dropout, attention at 8x8), one step timed.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/device.h"
#include "engine/file_io.h"
#include "engine/flops.h"
#include "engine/weight_copy.h"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "kernels/cuda/conv2d_cudnn.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "models/config_reader.h"
#include "models/ddpm/trainer.h"
#include "models/unet/image_train.h"

namespace ddpm::bench {

void bench_training_step(const Options& o, Timer& timer, Report& report) {
  struct Variant {
    const char* precision;
    bool cudnn, graph;
    bool bf16_activations = false;
    bool weight_copy = true;  // the run's bf16 copy of the weights (bf16 only) kept
    bool by_phase = true;     // upsample_by_phase: the upsamplers by output phase
    bool wgmma = false;       // cuda_conv: wgmma (convolution v5, Hopper only)
    bool autotune = false;    // cuda_autotune: v5's schedules timed per layer
    bool im2col = false;      // v5's WgmmaIm2col forced (the run's config sets Wgmma)
    bool auto_conv = false;   // cuda_conv: auto (v4 or cuDNN, per layer and pass)
    bool bf16x6 = false;      // cuda_conv: bf16x6 (fp32 on v4's GEMM, conv2d_pieces.cu)
    // cuDNN's algorithms timed per layer and pass (conv2d_cudnn_plan.cuh; what cuda_autotune
    // does under cuda_conv: cudnn, set alone here, so that nothing else the key tunes, the
    // attention's path, differs from the heuristic row): PyTorch's benchmark mode against
    // the heuristics' pick, in the same process
    bool cudnn_timed = false;
  };
  std::vector<Variant> variants;
  if (o.wants(false)) {
    for (const char* precision : {"fp32", "bf16"})
      for (const bool cudnn : {false, true})
        for (const bool graph : {false, true}) variants.push_back({precision, cudnn, graph});
    // TF32, eager: the convolutions on v4 in TF32 (TF32 mma.sync or bf16 pieces by pass,
    // precision tf32's default), and on cuDNN's TF32
    for (const bool cudnn : {false, true}) variants.push_back({"tf32", cudnn, false});
    // fp32, eager, the convolutions on v4's bf16 GEMM with fp32's numbers (three bf16
    // pieces an operand, six products): against v2's and cuDNN's fp32 rows above
    Variant pieces{"fp32", false, false};
    pieces.bf16x6 = true;
    variants.push_back(pieces);
    for (const bool graph : {false, true}) variants.push_back({"bf16", false, graph, true});
    variants.push_back({"bf16", false, false, true, false});
    variants.push_back({"bf16", false, false, true, true, false});
    variants.push_back({"bf16", true, false, true});
    for (const char* precision : {"fp32", "bf16"}) {  // the two cuDNN rows above, timed
      Variant timed{precision, true, false, std::string(precision) == "bf16"};
      timed.cudnn_timed = true;
      variants.push_back(timed);
    }
    for (const bool graph : {false, true}) {
      Variant tuned{"bf16", false, graph, true};
      tuned.auto_conv = true;
      variants.push_back(tuned);
    }
  }
  if (o.wants(true) && cuda::gemm_sm90_available()) {  // the bf16-activations step on v5
    // eager, as a graph, and eager autotuned (the graph's gain is the other two rows')
    for (const auto& [graph, autotune] : {std::pair{false, false}, {true, false}, {false, true}}) {
      Variant v5{"bf16", false, graph, true};
      v5.wgmma = true;
      v5.autotune = autotune;
      variants.push_back(v5);
    }
    for (const bool graph : {false, true}) {  // and on its im2col schedule, forced
      Variant im2col{"bf16", false, graph, true};
      im2col.wgmma = im2col.im2col = true;
      variants.push_back(im2col);
    }
  }
  const std::string config = o.smoke ? "configs/tiny.json" : "configs/cifar10_ddpm.json";
  std::vector<std::string> smoke_model;
  if (o.smoke)
    smoke_model = {"base_channels=8", "groups=4", "channel_mult=[1,2,2]", "dropout=0.1",
                   "attention_resolutions=[8]"};
  uint64_t step_flops = 0;  // counted in an eager step; a replayed graph runs no op to count
  for (const Variant& v : variants) {
    nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/" + config);
    std::vector<std::string> overrides = smoke_model;
    for (const std::string& kv :
         {std::string("device=cuda"), "batch_size=" + std::to_string(o.batch),
          std::string("precision=") + v.precision,
          std::string("cuda_graph=") + (v.graph ? "true" : "false"),
          std::string("cuda_conv=") +
              (v.cudnn       ? "cudnn"
               : v.auto_conv ? "auto"
               : v.wgmma     ? "wgmma"
               : v.bf16x6    ? "bf16x6"
                             : "tiled"),
          std::string("activations=") + (v.bf16_activations ? "bf16" : "fp32"),
          std::string("upsample_by_phase=") + (v.by_phase ? "true" : "false"),
          std::string("cuda_autotune=") + (v.autotune ? "true" : "false"),
          std::string("cuda_autotune_unverified=") + (v.autotune ? "true" : "false"),
          std::string("out_dir=/tmp/kernel-bench-step")})
      overrides.push_back(kv);
    for (const std::string& kv : overrides) apply_override(j, kv);
    ImageRun run(read_image_train_config(j, config + " (kernel-bench step)"));
    if (v.im2col) cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::WgmmaIm2col);  // until the end
    if (v.cudnn_timed) cuda::set_conv2d_cudnn_benchmark(true);  // until the next row's run
    if (!v.weight_copy) drop_bf16_copy(run.store().flat_data());
    cuda_reset_peak_bytes_in_use();  // the weights, moments and EMA in use; then the steps'
    // A graph is captured after the trainer's eager steps: those first, so that the timer's
    // first run (a warm-up: it also creates what is made once, tables, handles, workspaces)
    // captures it and the step counted below is a replay, in smoke mode too.
    if (v.graph)
      for (int i = 0; i < DiffusionTrainer::kEagerStepsBeforeCapture; ++i) run.step();
    const double ms = timer.median_ms([&] { run.step(); }, 4, 10);
    const double peak_gib = cuda_peak_bytes_in_use() / double(1 << 30);
    const DeviceWorkCounts before = device_work_counts();
    const uint64_t flops_before = matmul_flops();
    run.step();
    const DeviceWorkCounts after = device_work_counts();
    if (!v.graph) step_flops = matmul_flops() - flops_before;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%s U-Net, batch %lld", o.smoke ? "smoke" : "CIFAR-10",
                  static_cast<long long>(o.batch));
    const std::string variant = std::string(v.graph ? "CUDA graph " : "eager ") + v.precision +
                                (v.cudnn ? ", cuDNN convolutions" : "") +
                                (v.auto_conv ? ", v4 or cuDNN per layer (auto)" : "") +
                                (v.bf16x6 ? ", v4 bf16x6 convolutions" : "") +
                                (v.bf16_activations ? ", bf16 activations" : "") +
                                (v.weight_copy ? "" : ", no weight copy") +
                                (v.by_phase ? "" : ", upsample then conv") +
                                (v.wgmma ? ", v5 wgmma convolutions" : "") +
                                (v.im2col ? ", im2col A (forced)" : "") +
                                (v.autotune ? ", autotuned" : "") +
                                (v.cudnn_timed ? ", cuDNN's algorithms timed" : "");
    Row& r = report.add_rate("training step", shape, variant, ms, o.batch / (ms * 1e-3), "img/s");
    const double tflops = step_flops / (ms * 1e-3) * 1e-12;
    const double peak = std::string(v.precision) == "bf16"   ? report.peaks().bf16_tflops
                        : std::string(v.precision) == "tf32" ? report.peaks().tf32_tflops
                                                             : report.peaks().fp32_tflops;
    const DeviceWorkCounts issued = after - before;
    std::printf("  training step, %s: %.2f TFLOP per step, %.1f TFLOP/s, MFU %.1f%% of %.0f, "
                "peak %.2f GiB; per step %llu kernel launches, %llu graph launches, %llu "
                "memsets, %llu copies, %llu host syncs, %llu late reads\n",
                variant.c_str(), step_flops * 1e-12, tflops, 100.0 * tflops / peak, peak,
                peak_gib, static_cast<unsigned long long>(issued.launches),
                static_cast<unsigned long long>(issued.graph_launches),
                static_cast<unsigned long long>(issued.memsets),
                static_cast<unsigned long long>(issued.copies),
                static_cast<unsigned long long>(issued.host_syncs),
                static_cast<unsigned long long>(issued.late_reads));
    std::fflush(stdout);  // a step row takes seconds: show it as it comes (a killed run keeps it)
    r.extra = {{"step_tflop", step_flops * 1e-12},
               {"tflops", tflops},
               {"mfu", tflops / peak},
               {"peak_gib", peak_gib},
               {"kernel_launches", issued.launches},
               {"graph_launches", issued.graph_launches},
               {"memsets", issued.memsets},
               {"copies", issued.copies},
               {"host_syncs", issued.host_syncs},
               {"late_reads", issued.late_reads}};
    if (v.im2col) cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Wgmma);  // as the config set it
  }
}

}  // namespace ddpm::bench
