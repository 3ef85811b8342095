// The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), read
// through zlib, gzip'd or plain: a magic number 0x0000 TT NN (TT = 0x08 for unsigned bytes,
// NN the number of dimensions), NN big-endian 32-bit sizes, then the data row-major.
// Every problem is an error naming the file and the byte offset: a bad magic number, a type
// other than unsigned bytes, a header or data cut short, bytes after the data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // prod(dims) bytes
};

IdxArray read_idx(const std::string& path);
// The same from a file's (decompressed) bytes; `path` names them in errors.
IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& path);

}  // namespace ddpm
