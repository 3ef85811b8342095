// Reading a JSON run configuration with errors that name the key. Every typed getter checks
// the value's type and range; finish() fails on any key nobody asked for (a typo must not
// silently fall back to a default). Nested objects get readers of their own.
//
//   ConfigReader r(json, "configs/moons.json");
//   int steps = r.integer("steps", 3000, 1, 10'000'000);
//   std::string s = r.choice("schedule", "linear", {"linear", "cosine"});
//   r.finish();
#pragma once

#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/ops.h"

namespace ddpm {

// A key as read: the value used (the config's, or the default), the default, what is allowed.
struct ConfigKey {
  std::string name;
  nlohmann::json value, fallback;
  std::string allowed;
};

class ConfigReader {
 public:
  ConfigReader(nlohmann::json object, std::string context);

  double number(const std::string& key, double fallback, double lo, double hi);
  int64_t integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key, const std::string& fallback);
  std::string choice(const std::string& key, const std::string& fallback,
                     const std::vector<std::string>& options);
  std::vector<int64_t> integers(const std::string& key, const std::vector<int64_t>& fallback,
                                int64_t lo, int64_t hi);
  bool has(const std::string& key) const { return json_.contains(key); }
  void finish() const;  // errors on keys never read
  // A check across keys, after they are read: fails with "<context>: key '<key>' <why>".
  void require(bool ok, const std::string& key, const std::string& why) const {
    if (!ok) bad(key, why);
  }

  const nlohmann::json& json() const { return json_; }
  // Every key read so far, in reading order, with its resolved value (`ddpm config`, the
  // run's config.json, and comparing a resumed run's config with its checkpoint's).
  const std::vector<ConfigKey>& keys() const { return keys_; }
  nlohmann::json resolved() const;  // {key: value} of keys()

 private:
  const nlohmann::json* get(const std::string& key);
  template <class T>
  T record(const std::string& key, const T& value, const T& fallback, std::string allowed);
  [[noreturn]] void bad(const std::string& key, const std::string& why) const;

  nlohmann::json json_;
  std::string context_;
  std::set<std::string> read_;
  std::vector<ConfigKey> keys_;
};

// Key cpu_kernels: "fast" (kernels/cpu_fast; the default when built) or "reference".
CpuKernels read_cpu_kernels(ConfigReader& r);

// A JSON value as text for a message; invalid UTF-8 (a corrupt file) is replaced, not thrown on.
std::string json_text(const nlohmann::json& v);

// A number as text for a message: std::to_string's, or NaN, +Inf, -Inf.
std::string number_text(double v);

// A whole decimal integer: "12", "-3"; not "3.7", "1e3", "0x10", "" or out of int64's range.
// Errors name `what`.
int64_t parse_integer(const std::string& text, const std::string& what);

// Loads a JSON object from a file; errors name the file (and the parse position).
nlohmann::json load_json_file(const std::string& path);
// Applies "--set key=value" overrides: the value is parsed as JSON when it is JSON
// (numbers, true/false, [..]) and taken as a string otherwise; a dotted key descends into
// objects. Errors name the override.
void apply_override(nlohmann::json& config, const std::string& assignment);

}  // namespace ddpm
