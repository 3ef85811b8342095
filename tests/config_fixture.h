// The tests' model: configs/tiny.json from the source tree, with `key=value` overrides
// applied as `--set` applies them (DDPM_SOURCE_DIR is set per test executable).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config_reader.h"

namespace ddpm::test {

inline nlohmann::json tiny_json(const std::vector<std::string>& overrides) {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const std::string& o : overrides) apply_override(j, o);
  return j;
}

}  // namespace ddpm::test
