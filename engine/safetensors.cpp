#include "engine/safetensors.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "engine/file_io.h"

namespace ddpm {

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CHECK(t.dtype() == DType::F32, "safetensors: '" << name << "' is " << t.describe()
                                                    << "; only f32 is written");
    std::vector<int64_t> shape;
    for (int i = 0; i < t.shape().ndim(); ++i) shape.push_back(t.shape()[i]);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::vector<uint8_t> bytes(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(&bytes[8], text.data(), text.size());
  size_t pos = 8 + text.size();
  for (const auto& [name, t] : tensors) {
    device_copy(&bytes[pos], Device::CPU, t.raw(), t.device(), t.nbytes());
    pos += t.nbytes();
  }
  write_file_atomic(path, bytes.data(), bytes.size());
}

SafetensorsFile read_safetensors(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  CHECK(bytes.size() >= 8, "'" << path << "' is not a safetensors file: " << bytes.size()
                               << " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  CHECK(n <= bytes.size() - 8, "'" << path << "': header length " << n
                                   << " runs past the end of the file (" << bytes.size()
                                   << " bytes): truncated or not safetensors");
  nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n, nullptr,
                                                /*allow_exceptions=*/false);
  CHECK(!header.is_discarded() && header.is_object(),
        "'" << path << "': the safetensors header is not a JSON object (corrupt file?)");
  const size_t data_start = 8 + n, data_size = bytes.size() - data_start;
  SafetensorsFile f;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      CHECK(it->is_object(), "'" << path << "': __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        CHECK(m->is_string(), "'" << path << "': metadata '" << m.key() << "' is not a string");
        f.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const nlohmann::json& e = *it;
    CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          "'" << path << "': tensor '" << it.key() << "' lacks dtype, shape or data_offsets");
    CHECK(e["dtype"] == "F32", "'" << path << "': tensor '" << it.key() << "' has dtype "
                                   << e["dtype"].dump() << "; only F32 is read");
    std::vector<int64_t> dims = e["shape"].get<std::vector<int64_t>>();
    CHECK(dims.size() <= 4, "'" << path << "': tensor '" << it.key() << "' has "
                                << dims.size() << " dimensions (at most 4)");
    const Shape shape(dims);
    const auto off = e["data_offsets"].get<std::vector<uint64_t>>();
    CHECK(off.size() == 2 && off[0] <= off[1] && off[1] <= data_size &&
              off[1] - off[0] == static_cast<uint64_t>(shape.numel()) * 4,
          "'" << path << "': tensor '" << it.key() << "' has data_offsets " << e["data_offsets"].dump()
              << " that do not fit its shape " << shape.str() << " or the file's "
              << data_size << " data bytes (truncated?)");
    Tensor t = Tensor::empty(shape, DType::F32);
    std::memcpy(t.raw(), &bytes[data_start + off[0]], off[1] - off[0]);
    f.tensors[it.key()] = t;
  }
  return f;
}

}  // namespace ddpm
