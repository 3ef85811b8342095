// The checkpoint reader against hostile files: seeded mutations of a real checkpoint (bytes
// flipped in the header and the data, truncations, header lengths, and structured edits of
// the JSON: shapes that overflow, offsets that are floats, negative, overlapping or shifted,
// dtypes, metadata). Every case must end in a clean error (ddpm::Error, naming the file) or
// load a checkpoint that is then valid; nothing may crash, hang or throw anything else. The
// suite also runs under AddressSanitizer + UBSan (tests/cuda_emulation, asan variant).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <random>

#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "models/unet/image_train.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

ImageTrainConfig small_config() {
  nlohmann::json j = load_json_file(std::string(DDPM_SOURCE_DIR) + "/configs/tiny.json");
  for (const char* o :
       {"base_channels=8", "groups=4", "channel_mult=[1,1]", "attention_resolutions=[16]",
        "batch_size=2", "timestep_sampler=importance", "ema_decay=0.9"})
    apply_override(j, o);
  return read_image_train_config(j, "tiny.json (fuzz)");
}

// The header (JSON) and the data section of a safetensors file.
struct Split {
  nlohmann::json header;
  std::vector<uint8_t> data;
};
Split split(const std::vector<uint8_t>& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  return {nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n),
          std::vector<uint8_t>(bytes.begin() + 8 + n, bytes.end())};
}
std::vector<uint8_t> join(const std::string& header_text, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header_text.size() + data.size());
  for (int i = 0; i < 8; ++i) out[i] = uint8_t(uint64_t(header_text.size()) >> (8 * i));
  std::memcpy(out.data() + 8, header_text.data(), header_text.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header_text.size(), data.data(), data.size());
  return out;
}

// One mutation of the checkpoint, chosen and shaped by the generator.
std::vector<uint8_t> mutate(const std::vector<uint8_t>& good, std::mt19937_64& rng) {
  std::vector<uint8_t> b = good;
  Split s = split(good);
  const size_t header_end = 8 + s.header.dump().size();  // approximately: the JSON's bytes
  std::uniform_int_distribution<int> kind(0, 11);
  auto pick = [&](size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi - 1)(rng); };
  std::vector<std::string> tensors;
  for (auto it = s.header.begin(); it != s.header.end(); ++it)
    if (it.key() != "__metadata__") tensors.push_back(it.key());
  const std::string victim = tensors[pick(0, tensors.size())];
  switch (kind(rng)) {
    case 0:  // random bytes anywhere
      for (int i = 0, n = 1 + int(pick(0, 8)); i < n; ++i) b[pick(0, b.size())] = uint8_t(rng());
      return b;
    case 1:  // random bytes in the header
      for (int i = 0, n = 1 + int(pick(0, 4)); i < n; ++i) b[pick(8, std::min(header_end, b.size()))] = uint8_t(rng());
      return b;
    case 2:  // truncated
      b.resize(pick(0, b.size()));
      return b;
    case 3: {  // the header length field
      const uint64_t n = pick(0, 4) == 0 ? rng() : header_end - 8 + pick(0, 64) - 32;
      for (int i = 0; i < 8; ++i) b[i] = uint8_t(n >> (8 * i));
      return b;
    }
    case 4: {  // a shape whose element count overflows or exceeds the file
      const int64_t huge[] = {int64_t(1) << 62, 4294967296, int64_t(1) << 40, 3037000500};
      s.header[victim]["shape"] = {huge[pick(0, 4)], huge[pick(0, 4)], 2, 2};
      break;
    }
    case 5:  // offsets that are floats or negative
      s.header[victim]["data_offsets"] =
          pick(0, 2) ? nlohmann::json{0.5, 1e300} : nlohmann::json{-4, -1};
      break;
    case 6: {  // offsets that overlap another tensor's
      const std::string other = tensors[pick(0, tensors.size())];
      s.header[victim]["data_offsets"] = s.header[other]["data_offsets"];
      break;
    }
    case 7: {  // offsets shifted by a few bytes
      auto& off = s.header[victim]["data_offsets"];
      const int64_t d = int64_t(pick(0, 9)) - 4;
      off = {std::max<int64_t>(0, off[0].get<int64_t>() + d), std::max<int64_t>(0, off[1].get<int64_t>() + d)};
      break;
    }
    case 8:  // another dtype, a shape of the wrong type
      if (pick(0, 2)) s.header[victim]["dtype"] = pick(0, 2) ? "F16" : "I64";
      else s.header[victim]["shape"] = pick(0, 2) ? nlohmann::json("12") : nlohmann::json{1.5, 2};
      break;
    case 9: {  // metadata: the step, the sampler state, the config
      const char* keys[] = {"step", "timestep_sampler", "config", "optimizer_steps"};
      const char* values[] = {"-5", "1e3", "", "{\"kind\":\"importance\",\"T\":1000,\"history\":10,"
                                                "\"losses\":[],\"counts\":[],\"next\":[1e9]}",
                              "null", "99999999999999999999999"};
      s.header["__metadata__"][keys[pick(0, 4)]] = values[pick(0, 6)];
      break;
    }
    case 10:  // a tensor removed, or renamed
      if (pick(0, 2)) s.header.erase(victim);
      else {
        s.header[victim + "x"] = s.header[victim];
        s.header.erase(victim);
      }
      break;
    default: {  // NaN or Inf written into the data
      const float bad = pick(0, 2) ? std::nanf("") : INFINITY;
      const size_t at = pick(0, s.data.size() / 4) * 4;
      std::memcpy(&s.data[at], &bad, 4);
      break;
    }
  }
  std::string text = s.header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return join(text, s.data);
}

TEST(CheckpointFuzz, EveryMutationIsACleanErrorOrAValidCheckpoint) {
  const ImageTrainConfig c = small_config();
  ImageRun run(c);
  run.step();
  const std::string good_path = ::testing::TempDir() + "/fuzz_good.safetensors";
  run.save_checkpoint(good_path);
  const std::vector<uint8_t> good = read_file(good_path);
  const std::string path = ::testing::TempDir() + "/fuzz_case.safetensors";
  std::mt19937_64 rng(20261201);
  constexpr int kCases = 300;
  int errors = 0, accepted = 0, unnamed = 0;
  for (int i = 0; i < kCases; ++i) {
    const std::vector<uint8_t> bytes = mutate(good, rng);
    write_file_atomic(path, bytes.data(), bytes.size());
    try {
      ImageRun target(c, /*with_data=*/false);
      target.load_checkpoint(path);
      validate_checkpoint(path);
      ++accepted;  // a mutation that kept the file valid (e.g. bytes flipped in a weight)
    } catch (const Error& e) {
      ++errors;
      if (std::string(e.what()).find("fuzz_case.safetensors") == std::string::npos && unnamed++ < 5)
        ADD_FAILURE() << "case " << i << ": the error does not name the file: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << ": not a clean error: " << e.what();
    }
  }
  std::printf("checkpoint fuzz: %d cases, %d clean errors, %d accepted and valid, 0 crashes\n",
              kCases, errors, accepted);
  RecordProperty("clean_errors", errors);
  RecordProperty("accepted", accepted);
  EXPECT_EQ(errors + accepted, kCases);
  EXPECT_GT(errors, kCases / 2) << "most mutations must be caught: the mutator is not biting";
}

// The fuzz above asks only for some clean error; here each rule of the reader is broken on
// its own, in a file otherwise valid, and must give its own message (a rule dropped would
// still end in some error further on, or in none).
TEST(SafetensorsReader, EachBrokenRuleHasItsOwnError) {
  const auto refused = [](const char* header, size_t data_bytes, std::initializer_list<const char*> message) {
    const std::vector<uint8_t> bytes = join(header, std::vector<uint8_t>(data_bytes, 0));
    test::expect_error([&] { parse_safetensors(bytes, "rules.safetensors"); }, message);
  };
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12,
          {"'rules.safetensors'", "data bytes 8 to 12 belong to no tensor"});
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12,
          {"data bytes 0 to 4 belong to no tensor"});
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", 12,
          {"tensor 'a'", "spanning 12 bytes, but shape [2] of F32 needs 8"});
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
          12, {"tensors 'a' and 'b' overlap"});
  // 2^40 x 2^40 elements: the product would overflow 64 bits; refused dimension by dimension
  refused(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 8,
          {"tensor 'a'", "more elements than the file's 8 data bytes hold"});
  refused(R"({"a":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})", 8,
          {"tensor 'a'", "a list of at most 4 dimensions"});
  // and the same file with the rule kept reads
  const std::vector<uint8_t> fine =
      join(R"({"a":{"dtype":"F32","shape":[1,1,1,2],"data_offsets":[0,8]}})", std::vector<uint8_t>(8, 0));
  EXPECT_EQ(parse_safetensors(fine, "fine.safetensors").tensors.at("a").shape(), (Shape{1, 1, 1, 2}));
}

// The writer pads the header with spaces so the data starts 8-byte aligned (as the format's
// own writer does: readers may map the tensors in place), and what it writes reads back.
TEST(SafetensorsReader, TheWriterAlignsTheDataAndRoundTrips) {
  const std::string path = ::testing::TempDir() + "/aligned.safetensors";
  for (const char* name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"}) {
    const Tensor t = Tensor::from_vector<float>(Shape{3}, {1.5f, -2.0f, 0.25f});
    write_safetensors(path, {{name, t}}, {{"k", "v"}});
    const std::vector<uint8_t> bytes = read_file(path);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
    EXPECT_EQ((8 + n) % 8, 0u) << name;
    const SafetensorsFile f = parse_safetensors(bytes, path);
    EXPECT_EQ(f.tensors.at(name).to_vector<float>(), t.to_vector<float>()) << name;
    EXPECT_EQ(f.metadata.at("k"), "v");
  }
}

}  // namespace
}  // namespace ddpm
