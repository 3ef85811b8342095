// kernel-bench step: the CIFAR-10 model's whole training step (configs/cifar10_ddpm.json at
// --batch, synthetic data), in fp32 and bf16, queued kernel by kernel (~500 launches) and as
// one CUDA graph (cuda_graph: models/ddpm/captured_step.h). Per row: the median ms of a step
// from its queueing to its summary read back (ImageRun::step: queue, then resolve), so a GPU
// waiting for the host to queue the next kernel counts as time, the gap a graph closes;
// images per second; and what the host issued for one step (kernel launches, graph
// launches, copies), in the JSON rows. The graph rows' first runs include the capture (the
// warm-up takes it). Each also with cuDNN's convolutions (cuda_conv: cudnn, in the same
// precision) and our everything else: the step-level ratio of our convolutions to the
// library's. No fraction of peak: a step's FLOPs are not counted here.
#include <cstdio>
#include <string>
#include <vector>

#include "apps/bench/bench.h"
#include "engine/device.h"
#include "engine/file_io.h"
#include "models/config_reader.h"
#include "models/unet/image_train.h"

namespace ddpm::bench {

void bench_training_step(const Options& o, Timer& timer, Report& report) {
  struct Variant {
    const char* precision;
    bool cudnn, graph;
  };
  std::vector<Variant> variants;
  for (const char* precision : {"fp32", "bf16"})
    for (const bool cudnn : {false, true})
      for (const bool graph : {false, true}) variants.push_back({precision, cudnn, graph});
  for (const Variant& v : variants) {
    nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/cifar10_ddpm.json");
    for (const std::string& kv :
         {std::string("device=cuda"), "batch_size=" + std::to_string(o.batch),
          std::string("precision=") + v.precision,
          std::string("cuda_graph=") + (v.graph ? "true" : "false"),
          std::string("cuda_conv=") + (v.cudnn ? "cudnn" : "tiled"),
          std::string("out_dir=/tmp/kernel-bench-step")})
      apply_override(j, kv);
    ImageRun run(read_image_train_config(j, "configs/cifar10_ddpm.json (kernel-bench step)"));
    const double ms = timer.median_ms([&] { run.step(); }, 4, 10);
    const DeviceWorkCounts before = device_work_counts();
    run.step();
    const DeviceWorkCounts after = device_work_counts();
    char shape[64];
    std::snprintf(shape, sizeof shape, "CIFAR-10 U-Net, batch %lld",
                  static_cast<long long>(o.batch));
    const std::string variant = std::string(v.graph ? "CUDA graph " : "eager ") + v.precision +
                                (v.cudnn ? ", cuDNN convolutions" : "");
    Row& r = report.add_rate("training step", shape, variant, ms, o.batch / (ms * 1e-3), "img/s");
    r.extra = {{"kernel_launches", after.launches - before.launches},
               {"graph_launches", after.graph_launches - before.graph_launches},
               {"copies", after.copies - before.copies},
               {"host_syncs", after.host_syncs - before.host_syncs}};
  }
}

}  // namespace ddpm::bench
