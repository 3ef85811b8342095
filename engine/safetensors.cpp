#include "engine/safetensors.h"

#include <algorithm>
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

namespace {

// A header value for a message: invalid UTF-8 in a hostile file is replaced, not thrown on.
std::string show(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A JSON number that is a non-negative integer (not a float, not negative), as uint64.
bool unsigned_integer(const nlohmann::json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// One tensor's header entry, checked against the data section's size.
Entry parse_entry(const std::string& where, const std::string& name, const nlohmann::json& e,
                  uint64_t data_size) {
  const std::string what = where + ": tensor '" + name + "'";
  CHECK(!name.empty(), where << ": a tensor has an empty name");
  CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
        what << " lacks dtype, shape or data_offsets");
  CHECK(e["dtype"] == "F32", what << " has dtype " << show(e["dtype"]) << "; only F32 is read");
  const nlohmann::json& shape = e["shape"];
  CHECK(shape.is_array() && shape.size() <= 4,
        what << " has shape " << show(shape) << ": a list of at most 4 dimensions is expected");
  // The element count may not exceed what the data section can hold: this also keeps the
  // product from overflowing.
  const uint64_t capacity = data_size / 4;
  uint64_t count = 1;
  std::vector<int64_t> dims;
  for (const nlohmann::json& d : shape) {
    uint64_t v = 0;
    CHECK(unsigned_integer(d, &v), what << " has shape " << show(shape)
                                        << ": dimensions must be non-negative integers");
    CHECK(v == 0 || count <= capacity / v,
          what << " has shape " << show(shape) << ": more elements than the file's "
               << data_size << " data bytes hold");
    count *= v;
    dims.push_back(static_cast<int64_t>(v));
  }
  const nlohmann::json& off = e["data_offsets"];
  Entry entry{name, Shape(dims)};
  CHECK(off.is_array() && off.size() == 2 && unsigned_integer(off[0], &entry.begin) &&
            unsigned_integer(off[1], &entry.end),
        what << " has data_offsets " << show(off) << ": two non-negative integers expected");
  CHECK(entry.begin <= entry.end && entry.end <= data_size,
        what << " has data_offsets " << show(off) << " outside the file's " << data_size
             << " data bytes (truncated?)");
  CHECK(entry.end - entry.begin == count * 4,
        what << " has data_offsets " << show(off) << " spanning " << entry.end - entry.begin
             << " bytes, but shape " << show(shape) << " of F32 needs " << count * 4);
  return entry;
}

}  // namespace

SafetensorsFile parse_safetensors(const std::vector<uint8_t>& bytes, const std::string& path) {
  const std::string where = "'" + path + "'";
  CHECK(bytes.size() >= 8, where << " is not a safetensors file: " << bytes.size()
                                 << " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  CHECK(n <= bytes.size() - 8, where << ": header length " << n << " runs past the end of the file ("
                                     << bytes.size() << " bytes): truncated or not safetensors");
  nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n, nullptr,
                                                /*allow_exceptions=*/false);
  CHECK(!header.is_discarded() && header.is_object(),
        where << ": the safetensors header is not a JSON object (corrupt file?)");
  const uint64_t data_start = 8 + n, data_size = bytes.size() - data_start;
  SafetensorsFile f;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      CHECK(it->is_object(), where << ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        CHECK(m->is_string(), where << ": metadata '" << m.key() << "' is not a string");
        f.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(where, it.key(), *it, data_size));
  }
  // The tensors must tile the data section exactly, as the format requires: no overlaps and
  // no gaps. A header length that shifted the data shows up here, as a gap or an overrun.
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    CHECK(order[i]->begin >= covered,
          where << ": tensors '" << order[i - 1]->name << "' and '" << order[i]->name
                << "' overlap in the data section");
    CHECK(order[i]->begin == covered, where << ": data bytes " << covered << " to "
                                            << order[i]->begin << " belong to no tensor");
    covered = order[i]->end;
  }
  CHECK(covered == data_size, where << ": data bytes " << covered << " to " << data_size
                                    << " belong to no tensor (a wrong header length?)");
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, DType::F32);
    if (e.end > e.begin) std::memcpy(t.raw(), &bytes[data_start + e.begin], e.end - e.begin);
    f.tensors[e.name] = t;
  }
  return f;
}

SafetensorsFile read_safetensors(const std::string& path) {
  return parse_safetensors(read_file(path), path);
}

}  // namespace ddpm
