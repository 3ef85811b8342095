#include "engine/check.h"

namespace ddpm {

void throw_error(const char* file, int line, const std::string& what, const char* expr) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  if (expr != nullptr) os << " (check failed: " << expr << ")";
  throw Error(os.str(), what);
}

}  // namespace ddpm
