// The small U-Net the GPU model tests train (test_cuda_model, test_cuda_graph).
#pragma once

#include <string>
#include <vector>

#include "engine/file_io.h"
#include "models/unet/image_train.h"
#include "tests/test_util.h"

namespace ddpm::test {

// tiny.json at 8 channels, with dropout and an EMA; with DDPM_TEST_SMALL_SHAPES (the CPU
// emulation, GPU sanitizers) batch 2 and a third level, so attention runs at 8x8 (L = 64):
// every layer kind is kept at a fraction of the work. `more` overrides go last.
inline ImageTrainConfig small_unet_config(const std::string& device,
                                          const std::string& precision = "fp32",
                                          const std::vector<std::string>& more = {}) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  std::vector<std::string> overrides{"base_channels=8", "groups=4", "batch_size=4", "steps=6",
                                     "dropout=0.1", "ema_decay=0.9", "device=" + device,
                                     "precision=" + precision};
  if (small_shapes_only())
    for (const char* o : {"batch_size=2", "channel_mult=[1,2,2]", "attention_resolutions=[8]"})
      overrides.push_back(o);
  overrides.insert(overrides.end(), more.begin(), more.end());
  for (const std::string& o : overrides) apply_override(j, o);
  return read_image_train_config(j, "tiny.json (test)");
}

}  // namespace ddpm::test
