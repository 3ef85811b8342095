// A small command-line parser for the `ddpm` subcommands: "--name value" options, "--flag"
// switches and repeatable options, each declared up front; anything else is an error that
// names the argument.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ddpm::app {

class Args {
 public:
  // options: names taking a value; flags: names without one; repeated: options that may
  // appear several times (e.g. --set). words: where the arguments that are not options go,
  // in order (kernel-bench's sections); without it, such an argument is an error.
  Args(int argc, char** argv, const std::vector<std::string>& options,
       const std::vector<std::string>& flags, const std::vector<std::string>& repeated = {},
       std::vector<std::string>* words = nullptr);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback) const;
  std::string require(const std::string& name) const;  // error if missing
  long long integer(const std::string& name, long long fallback, long long lo, long long hi) const;
  double number(const std::string& name, double fallback, double lo, double hi) const;
  std::vector<std::string> all(const std::string& name) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace ddpm::app
