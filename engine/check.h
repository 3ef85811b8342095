// Error checks that throw. The library never exits: it throws ddpm::Error carrying the failed
// expression, the file and the line, so tests can see a failure and apps print one line at
// main. CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK live in engine/cuda_check.h (they need the
// CUDA headers); this file is plain C++.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ddpm {

// what() is "file:line: message (check failed: expr)", the whole story for a developer or
// a test; message() is the message alone, which is what a person running `ddpm` is shown
// (apps print the rest only with DDPM_ERROR_SOURCE=1).
class Error : public std::runtime_error {
 public:
  Error(const std::string& full, std::string message)
      : std::runtime_error(full), message_(std::move(message)) {}
  explicit Error(const std::string& message) : Error(message, message) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// "file:line: what (check failed: expr)" -- one line, the form every check uses.
[[noreturn]] void throw_error(const char* file, int line, const std::string& what,
                              const char* expr);

}  // namespace ddpm

// CHECK(cond, msg): msg is anything that streams, e.g. CHECK(c % g == 0, "C=" << c << " ...").
#define CHECK(cond, msg)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream ddpm_check_os_;                                       \
      ddpm_check_os_ << msg;                                                   \
      ::ddpm::throw_error(__FILE__, __LINE__, ddpm_check_os_.str(), #cond);    \
    }                                                                          \
  } while (0)

// THROW_ERROR(msg): an unconditional error with the same form.
#define THROW_ERROR(msg)                                                              \
  do {                                                                         \
    std::ostringstream ddpm_check_os_;                                         \
    ddpm_check_os_ << msg;                                                     \
    ::ddpm::throw_error(__FILE__, __LINE__, ddpm_check_os_.str(), nullptr);    \
  } while (0)
