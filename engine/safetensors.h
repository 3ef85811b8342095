// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data section) plus an
// optional "__metadata__" object of string -> string, then the raw little-endian data.
// We write F32 tensors (and read F32 only); files are written atomically. Every structural
// problem on read is an error naming the file and what is wrong.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;          // CPU f32
  std::map<std::string, std::string> metadata;
};

// Tensors may live on any device; they are copied to the host as they are written, in the
// order given.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata);
// Every structural problem is an error naming the file (and the tensor): the header length,
// the JSON, dtypes, shapes (non-negative integers, no more elements than the file holds),
// data_offsets (non-negative integers matching the shape) and the tiling of the data
// section (no overlaps, no gaps).
SafetensorsFile read_safetensors(const std::string& path);
// The same from bytes in memory; `path` names them in errors.
SafetensorsFile parse_safetensors(const std::vector<uint8_t>& bytes, const std::string& path);

}  // namespace ddpm
