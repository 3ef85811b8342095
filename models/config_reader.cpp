#include "models/config_reader.h"

#include <cmath>

#include "engine/check.h"
#include "engine/file_io.h"

namespace ddpm {

ConfigReader::ConfigReader(nlohmann::json object, std::string context)
    : json_(std::move(object)), context_(std::move(context)) {
  CHECK(json_.is_object(), context_ << ": expected a JSON object, got " << json_.type_name());
}

void ConfigReader::bad(const std::string& key, const std::string& why) const {
  THROW_ERROR(context_ << ": key '" << key << "' " << why);
}

const nlohmann::json* ConfigReader::get(const std::string& key) {
  read_.insert(key);
  auto it = json_.find(key);
  return it == json_.end() ? nullptr : &*it;
}

double ConfigReader::number(const std::string& key, double fallback, double lo, double hi) {
  const nlohmann::json* v = get(key);
  if (!v) return fallback;
  if (!v->is_number()) bad(key, "must be a number, got " + v->dump());
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(key, "must be in [" + nlohmann::json(lo).dump() + ", " + nlohmann::json(hi).dump() +
                 "], got " + v->dump());
  return x;
}

int64_t ConfigReader::integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  const nlohmann::json* v = get(key);
  if (!v) return fallback;
  if (!v->is_number_integer()) bad(key, "must be an integer, got " + v->dump());
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                 v->dump());
  return x;
}

bool ConfigReader::boolean(const std::string& key, bool fallback) {
  const nlohmann::json* v = get(key);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(key, "must be true or false, got " + v->dump());
  return v->get<bool>();
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) {
  const nlohmann::json* v = get(key);
  if (!v) return fallback;
  if (!v->is_string()) bad(key, "must be a string, got " + v->dump());
  return v->get<std::string>();
}

std::string ConfigReader::choice(const std::string& key, const std::string& fallback,
                                 std::initializer_list<const char*> options) {
  const std::string s = string(key, fallback);
  std::string list;
  for (const char* o : options) {
    if (s == o) return s;
    list += std::string(list.empty() ? "" : ", ") + o;
  }
  bad(key, "must be one of " + list + ", got \"" + s + "\"");
}

std::vector<int64_t> ConfigReader::integers(const std::string& key,
                                            const std::vector<int64_t>& fallback, int64_t lo,
                                            int64_t hi) {
  const nlohmann::json* v = get(key);
  if (!v) return fallback;
  if (!v->is_array()) bad(key, "must be a list of integers, got " + v->dump());
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer() || e.get<int64_t>() < lo || e.get<int64_t>() > hi)
      bad(key, "must hold integers in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                   "], got " + v->dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

void ConfigReader::finish() const {
  for (auto it = json_.begin(); it != json_.end(); ++it)
    CHECK(read_.count(it.key()), context_ << ": unknown key '" << it.key() << "'");
}

nlohmann::json load_json_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  try {
    return nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::parse_error& e) {
    THROW_ERROR("'" << path << "' is not valid JSON: " << e.what());
  }
}

void apply_override(nlohmann::json& config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  CHECK(eq != std::string::npos && eq > 0,
        "--set expects key=value, got '" << assignment << "'");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  nlohmann::json* node = &config;
  size_t start = 0;
  for (size_t dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    node = &(*node)[key.substr(start, dot - start)];
    CHECK(node->is_object() || node->is_null(),
          "--set " << key << ": '" << key.substr(0, dot) << "' is not an object");
  }
  (*node)[key.substr(start)] = value;
}

}  // namespace ddpm
