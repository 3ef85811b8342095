#include "apps/args.h"

#include <algorithm>

#include "engine/check.h"

namespace ddpm::app {

Args::Args(int argc, char** argv, const std::vector<std::string>& options,
           const std::vector<std::string>& flags, const std::vector<std::string>& repeated,
           std::vector<std::string>* words) {
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (words != nullptr && a.rfind("--", 0) != 0) {
      words->push_back(a);
      continue;
    }
    CHECK(a.rfind("--", 0) == 0, "unexpected argument '" << a << "'");
    const std::string name = a.substr(2);
    if (in(flags, name)) {
      values_[name].push_back("true");
    } else if (in(options, name) || in(repeated, name)) {
      CHECK(i + 1 < argc, "option '" << a << "' needs a value");
      CHECK(in(repeated, name) || !values_.count(name), "option '" << a << "' given twice");
      values_[name].push_back(argv[++i]);
    } else {
      THROW_ERROR("unknown option '" << a << "'");
    }
  }
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::string Args::require(const std::string& name) const {
  CHECK(has(name), "missing required option '--" << name << "'");
  return get(name, "");
}

long long Args::integer(const std::string& name, long long fallback, long long lo,
                        long long hi) const {
  if (!has(name)) return fallback;
  const std::string s = get(name, "");
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CHECK(used == s.size() && !s.empty(), "option '--" << name << "' needs an integer, got '" << s << "'");
  CHECK(v >= lo && v <= hi, "option '--" << name << "' must be in [" << lo << ", " << hi
                                         << "], got " << v);
  return v;
}

double Args::number(const std::string& name, double fallback, double lo, double hi) const {
  if (!has(name)) return fallback;
  const std::string s = get(name, "");
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CHECK(used == s.size() && !s.empty(), "option '--" << name << "' needs a number, got '" << s << "'");
  // NaN and the infinities fail a comparison with finite bounds: no separate check
  CHECK(v >= lo && v <= hi,
        "option '--" << name << "' must be in [" << lo << ", " << hi << "], got '" << s << "'");
  return v;
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

}  // namespace ddpm::app
