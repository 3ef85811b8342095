#include "apps/checkpoint_run.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace ddpm::app {

CheckpointRun open_checkpoint_run(const Args& args) {
  const std::string ckpt = args.require("ckpt");
  CheckpointRun r;
  r.info = read_checkpoint_info(ckpt);
  // how to multiply, not what was learnt: free to change (with_products)
  const std::string precision = args.get("precision", ""), conv = args.get("cuda-conv", "");
  CHECK(!args.has("precision") || precision == "fp32" || precision == "tf32" ||
            precision == "bf16",
        "option '--precision' must be fp32, tf32 or bf16, got '" << precision << "'");
  const std::vector<std::string>& convs = cuda_conv_values();
  std::string list;
  for (const std::string& a : convs) list += (list.empty() ? "" : ", ") + a;
  CHECK(!args.has("cuda-conv") || std::find(convs.begin(), convs.end(), conv) != convs.end(),
        "option '--cuda-conv' must be one of " << list << ", got '" << conv << "'");
  const nlohmann::json config = with_products(r.info.config, precision, conv);
  ImageTrainConfig c = read_image_train_config(config, ckpt + " (stored config)");
  if (args.has("device")) {
    const std::string d = args.get("device", "");
    CHECK(d == "cpu" || d == "cuda", "option '--device' must be cpu or cuda, got '" << d << "'");
    c.device = d == "cuda" ? Device::CUDA : Device::CPU;
  }
  r.run = std::make_unique<ImageRun>(c, /*with_data=*/false);
  r.run->load_checkpoint(ckpt);
  return r;
}

Progress::Progress(std::string what, int64_t total)
    : what_(std::move(what)), total_(total), tty_(isatty(fileno(stdout))),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done) {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = done / std::max(secs, 1e-9);
  const long long eta = static_cast<long long>((total_ - done) / std::max(rate, 1e-9));
  const int64_t decile = done * 10 / total_;
  if (!tty_ && decile == last_decile_ && done != total_) return;
  last_decile_ = decile;
  char bar[21];
  for (int i = 0; i < 20; ++i) bar[i] = i < done * 20 / total_ ? '#' : '.';
  bar[20] = 0;
  std::printf("%s%s %lld/%lld [%s]  %.1f/s  eta %lld:%02lld:%02lld%s", tty_ ? "\r" : "",
              what_.c_str(), static_cast<long long>(done), static_cast<long long>(total_), bar,
              rate, eta / 3600, eta / 60 % 60, eta % 60, tty_ && done != total_ ? "" : "\n");
  std::fflush(stdout);
}

}  // namespace ddpm::app
