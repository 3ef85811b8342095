// Files written so that nothing is ever half-written: the bytes go to "<path>.tmp.<pid>.<n>"
// (a name no other writer uses), are flushed and fsync'ed, and the temporary file is renamed
// over <path> (atomic on POSIX). A crash leaves either the old file or the new one, and at
// worst a temporary file (RunFolder removes those). Errors name the path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

void write_file_atomic(const std::string& path, const void* data, size_t bytes);
void write_file_atomic(const std::string& path, const std::string& text);
// The whole file; errors name the path ("cannot open ...", "read failed ...").
std::vector<uint8_t> read_file(const std::string& path);
// mkdir -p
void make_directories(const std::string& path);

}  // namespace ddpm
