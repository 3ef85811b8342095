#include "models/data/image_export.h"

#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <limits>

#include "engine/check.h"
#include "engine/file_io.h"
#include "engine/png.h"
#include "models/data/image_dataset.h"

namespace ddpm {

namespace {

namespace fs = std::filesystem;

void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

ImageFormat parse_image_format(const std::string& name) {
  if (name == "npz") return ImageFormat::Npz;
  if (name == "png") return ImageFormat::Png;
  THROW_ERROR("unknown image format '" << name << "' (expected npz or png)");
}

std::vector<uint8_t> encode_npy_u8(const std::vector<uint8_t>& values,
                                   const std::vector<int64_t>& shape) {
  int64_t count = 1;
  std::string dims;  // Python's tuple: (a, b, c), and (a,) for one dimension
  for (size_t i = 0; i < shape.size(); ++i) {
    count *= shape[i];
    dims += (i ? ", " : "") + std::to_string(shape[i]);
  }
  if (shape.size() == 1) dims += ",";
  CHECK(count == static_cast<int64_t>(values.size()),
        "npy: " << values.size() << " values for a shape of " << count);
  std::string header = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + length (2) + header + '\n' padded to a multiple of 64
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  put_le(out, header.size(), 2);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), values.begin(), values.end());
  return out;
}

std::vector<uint8_t> encode_zip_stored(const std::string& name, const std::vector<uint8_t>& data) {
  CHECK(data.size() < std::numeric_limits<uint32_t>::max(),
        "zip: '" << name << "' is " << data.size() << " bytes; archives without ZIP64 hold under 4 GiB");
  const uint32_t crc = static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), data.data(), static_cast<uInt>(data.size())));
  const uint64_t size = data.size();
  constexpr uint64_t kDate1980 = (0 << 9) | (1 << 5) | 1;  // DOS date 1980-01-01
  // the fields shared by the local header and the central directory entry, from "version
  // needed" on: version 2.0, no flags, stored, time 0, date, crc, sizes, name length
  auto common = [&](std::vector<uint8_t>& out) {
    put_le(out, 20, 2);
    put_le(out, 0, 2);
    put_le(out, 0, 2);
    put_le(out, 0, 2);
    put_le(out, kDate1980, 2);
    put_le(out, crc, 4);
    put_le(out, size, 4);
    put_le(out, size, 4);
    put_le(out, name.size(), 2);
  };
  std::vector<uint8_t> out;
  out.reserve(data.size() + 2 * name.size() + 128);
  put_le(out, 0x04034b50, 4);  // local file header
  common(out);
  put_le(out, 0, 2);  // extra field length
  out.insert(out.end(), name.begin(), name.end());
  out.insert(out.end(), data.begin(), data.end());
  const uint64_t directory = out.size();
  put_le(out, 0x02014b50, 4);  // central directory entry
  put_le(out, 20, 2);          // made by: version 2.0
  common(out);
  for (int field = 0; field < 3; ++field) put_le(out, 0, 2);  // extra, comment, disk
  put_le(out, 0, 2);                                           // internal attributes
  put_le(out, 0, 4);                                           // external attributes
  put_le(out, 0, 4);                                           // the local header's offset
  out.insert(out.end(), name.begin(), name.end());
  const uint64_t directory_size = out.size() - directory;
  put_le(out, 0x06054b50, 4);  // end of central directory
  put_le(out, 0, 2);           // this disk
  put_le(out, 0, 2);           // the directory's disk
  put_le(out, 1, 2);           // entries here
  put_le(out, 1, 2);           // entries in all
  put_le(out, directory_size, 4);
  put_le(out, directory, 4);
  put_le(out, 0, 2);  // comment length
  return out;
}

ImageWriter::ImageWriter(const std::string& path, ImageFormat format, int64_t total)
    : path_(path), format_(format), total_(total) {
  CHECK(total >= 1, "image export: nothing to write (" << total << " images)");
  const fs::path p(path);
  if (format == ImageFormat::Npz) {
    CHECK(p.extension() == ".npz", "'" << path << "': the npz format needs a .npz file name");
    const fs::path dir = p.parent_path().empty() ? "." : p.parent_path();
    CHECK(fs::is_directory(dir), "'" << path << "': the folder '" << dir.string() << "' does not exist");
    CHECK(::access(dir.c_str(), W_OK) == 0, "'" << path << "': the folder '" << dir.string()
                                                << "' is not writable");
  } else {
    CHECK(!fs::exists(p) || (fs::is_directory(p) && fs::is_empty(p)),
          "'" << path << "': the png format writes into a new or empty folder, and this "
              << (fs::is_directory(p) ? "folder is not empty" : "is a file"));
    fs::create_directories(p);
  }
}

void ImageWriter::add(const Tensor& images) {
  const Shape& s = images.shape();
  CHECK(s.ndim() == 4 && (s[3] == 1 || s[3] == 3),
        "image export: need (N, H, W, 1 or 3) images, got " << images.describe());
  CHECK(count_ == 0 || (s[1] == h_ && s[2] == w_),
        "image export: " << s[1] << "x" << s[2] << " images after " << h_ << "x" << w_);
  CHECK(count_ + s[0] <= total_, "image export: more than the " << total_ << " images announced");
  h_ = s[1];
  w_ = s[2];
  const std::vector<uint8_t> bytes = to_bytes(images);
  const int64_t pixels = h_ * w_, c = s[3];
  for (int64_t i = 0; i < s[0]; ++i) {
    std::vector<uint8_t> rgb(static_cast<size_t>(pixels * 3));
    for (int64_t p = 0; p < pixels; ++p)
      for (int k = 0; k < 3; ++k) rgb[p * 3 + k] = bytes[(i * pixels + p) * c + (c == 3 ? k : 0)];
    if (format_ == ImageFormat::Npz) {
      rgb_.insert(rgb_.end(), rgb.begin(), rgb.end());
    } else {
      char name[32];
      std::snprintf(name, sizeof name, "/%06lld.png", static_cast<long long>(count_ + i));
      write_png(path_ + name, static_cast<int>(w_), static_cast<int>(h_), rgb);
    }
  }
  count_ += s[0];
}

void ImageWriter::finish() {
  CHECK(count_ == total_, "image export: " << count_ << " of " << total_ << " images written");
  if (format_ == ImageFormat::Npz) {
    const std::vector<uint8_t> zip =
        encode_zip_stored("arr_0.npy", encode_npy_u8(rgb_, {count_, h_, w_, 3}));
    write_file_atomic(path_, zip.data(), zip.size());
  }
}

}  // namespace ddpm
