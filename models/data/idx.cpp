#include "models/data/idx.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "engine/check.h"

namespace ddpm {

namespace {

// The whole file through gzread, which passes plain files through unchanged.
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  CHECK(f != nullptr, "cannot open '" << path << "': " << std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  int code = Z_OK;
  const std::string why = n < 0 ? gzerror(f, &code) : "";
  // Z_BUF_ERROR: the last read ended inside a gzip stream (zlib.h, gzclose), which gzread
  // itself reports as a plain end of file
  const int closed = gzclose(f);
  CHECK(n == 0, "'" << path << "': decompression failed after " << bytes.size()
                    << " bytes: " << why << " (a damaged or truncated .gz?)");
  CHECK(closed != Z_BUF_ERROR, "'" << path << "': the gzip stream ends early, after "
                                   << bytes.size() << " bytes (a truncated .gz?)");
  return bytes;
}

uint32_t big_endian(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

}  // namespace

IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& path) {
  CHECK(bytes.size() >= 4, "'" << path << "': " << bytes.size()
                               << " bytes, too short for the IDX magic number at offset 0");
  CHECK(bytes[0] == 0 && bytes[1] == 0,
        "'" << path << "': bad IDX magic number at offset 0 (starts 0x" << std::hex
            << int(bytes[0]) << " 0x" << int(bytes[1]) << ", expected 0x00 0x00)");
  CHECK(bytes[2] == 0x08, "'" << path << "': IDX data type 0x" << std::hex << int(bytes[2])
                              << " at offset 2; only unsigned bytes (0x08) are read");
  const int ndim = bytes[3];
  CHECK(ndim >= 1 && ndim <= 4, "'" << path << "': " << ndim
                                    << " dimensions at offset 3 (1 to 4 expected)");
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  CHECK(bytes.size() >= header, "'" << path << "': the header is cut short at offset "
                                    << bytes.size() << " (" << header << " bytes expected)");
  IdxArray a;
  uint64_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint32_t d = big_endian(&bytes[4 + 4 * i]);
    CHECK(d > 0 && count <= (uint64_t(1) << 40) / d,
          "'" << path << "': dimension " << i << " at offset " << 4 + 4 * i << " is " << d);
    a.dims.push_back(d);
    count *= d;
  }
  CHECK(bytes.size() - header >= count,
        "'" << path << "': the data is cut short at offset " << bytes.size() << ": "
            << count << " bytes expected from offset " << header << " (truncated?)");
  CHECK(bytes.size() - header == count, "'" << path << "': " << bytes.size() - header - count
                                            << " bytes after the data, from offset "
                                            << header + count);
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return a;
}

IdxArray read_idx(const std::string& path) { return parse_idx(read_maybe_gzipped(path), path); }

}  // namespace ddpm
