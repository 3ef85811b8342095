#include "models/config_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

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

template <class T>
T ConfigReader::record(const std::string& key, const T& value, const T& fallback,
                       std::string allowed) {
  keys_.push_back(ConfigKey{key, nlohmann::json(value), nlohmann::json(fallback), std::move(allowed)});
  return value;
}

nlohmann::json ConfigReader::resolved() const {
  nlohmann::json out = nlohmann::json::object();
  for (const ConfigKey& k : keys_) out[k.name] = k.value;
  return out;
}

namespace {
std::string range(const nlohmann::json& lo, const nlohmann::json& hi) {
  return "[" + lo.dump() + ", " + hi.dump() + "]";
}
}  // namespace

double ConfigReader::number(const std::string& key, double fallback, double lo, double hi) {
  const std::string allowed = "a number in " + range(lo, hi);
  const nlohmann::json* v = get(key);
  if (!v) return record(key, fallback, fallback, allowed);
  if (!v->is_number()) bad(key, "must be " + allowed + ", got " + json_text(*v));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(key, "must be " + allowed + ", got " + json_text(*v));
  return record(key, x, fallback, allowed);
}

int64_t ConfigReader::integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  const std::string allowed = "an integer in " + range(lo, hi);
  const nlohmann::json* v = get(key);
  if (!v) return record(key, fallback, fallback, allowed);
  if (!v->is_number_integer()) bad(key, "must be " + allowed + ", got " + json_text(*v));
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) bad(key, "must be " + allowed + ", got " + json_text(*v));
  return record(key, x, fallback, allowed);
}

bool ConfigReader::boolean(const std::string& key, bool fallback) {
  const nlohmann::json* v = get(key);
  if (!v) return record(key, fallback, fallback, "true or false");
  if (!v->is_boolean()) bad(key, "must be true or false, got " + json_text(*v));
  return record(key, v->get<bool>(), fallback, "true or false");
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) {
  const nlohmann::json* v = get(key);
  if (!v) return record(key, fallback, fallback, "a string");
  if (!v->is_string()) bad(key, "must be a string, got " + json_text(*v));
  return record(key, v->get<std::string>(), fallback, "a string");
}

std::string ConfigReader::choice(const std::string& key, const std::string& fallback,
                                 const std::vector<std::string>& options) {
  std::string list;
  for (const std::string& o : options) list += (list.empty() ? "" : ", ") + o;
  const nlohmann::json* v = get(key);
  const std::string s = v == nullptr ? fallback : v->is_string() ? v->get<std::string>() : "";
  if (v != nullptr && !v->is_string()) bad(key, "must be one of " + list + ", got " + json_text(*v));
  for (const std::string& o : options)
    if (s == o) return record(key, s, fallback, "one of " + list);
  bad(key, "must be one of " + list + ", got \"" + s + "\"");
}

std::vector<int64_t> ConfigReader::integers(const std::string& key,
                                            const std::vector<int64_t>& fallback, int64_t lo,
                                            int64_t hi) {
  const std::string allowed = "a list of integers in " + range(lo, hi);
  const nlohmann::json* v = get(key);
  if (!v) return record(key, fallback, fallback, allowed);
  if (!v->is_array()) bad(key, "must be " + allowed + ", got " + json_text(*v));
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer() || e.get<int64_t>() < lo || e.get<int64_t>() > hi)
      bad(key, "must be " + allowed + ", got " + json_text(*v));
    out.push_back(e.get<int64_t>());
  }
  return record(key, out, fallback, allowed);
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

CpuKernels read_cpu_kernels(ConfigReader& r) {
  const bool built = cpu_fast_kernels_built();
  const std::string k = r.choice("cpu_kernels", built ? "fast" : "reference", {"fast", "reference"});
  CHECK(k == "reference" || built, "key 'cpu_kernels': \"fast\" needs oneDNN and OpenBLAS, "
                                   "which this build lacks (scripts/setup.sh installs them)");
  return k == "fast" ? CpuKernels::Fast : CpuKernels::Reference;
}

std::string json_text(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string number_text(double v) {
  return std::isnan(v) ? "NaN" : std::isinf(v) ? (v > 0 ? "+Inf" : "-Inf") : std::to_string(v);
}

int64_t parse_integer(const std::string& text, const std::string& what) {
  size_t i = text[0] == '-' || text[0] == '+' ? 1 : 0;
  bool digits = i < text.size();
  for (size_t k = i; k < text.size(); ++k) digits = digits && text[k] >= '0' && text[k] <= '9';
  errno = 0;
  const long long v = digits ? std::strtoll(text.c_str(), nullptr, 10) : 0;
  CHECK(digits && errno == 0, what << " must be a whole number, got '" << text << "'");
  return v;
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
