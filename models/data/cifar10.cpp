#include "models/data/cifar10.h"

#include <algorithm>
#include <cstring>

#include "engine/file_io.h"

namespace ddpm {

Cifar10 Cifar10::load(const std::string& dir, bool train, const std::vector<int>& class_filter) {
  std::vector<std::string> files;
  if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  } else {
    files.push_back(dir + "/test_batch.bin");
  }
  return load_files(files, class_filter);
}

Cifar10 Cifar10::load_files(const std::vector<std::string>& files,
                            const std::vector<int>& class_filter) {
  for (int c : class_filter)
    CHECK(c >= 0 && c <= 9, "CIFAR-10 class filter: " << c << " is not a class (0-9)");
  Cifar10 d;
  for (const std::string& f : files) {
    const std::vector<uint8_t> bytes = read_file(f);
    CHECK(!bytes.empty(), "CIFAR-10 file '" << f << "' is empty");
    CHECK(bytes.size() % kRecordBytes == 0,
          "CIFAR-10 file '" << f << "' has " << bytes.size() << " bytes, not a multiple of the "
                            << kRecordBytes << "-byte record (truncated or not CIFAR-10 binary?)");
    for (size_t r = 0; r < bytes.size() / kRecordBytes; ++r) {
      const uint8_t* rec = &bytes[r * kRecordBytes];
      CHECK(rec[0] <= 9, "CIFAR-10 file '" << f << "' record " << r << " has label "
                                           << int(rec[0]) << " (expected 0-9): corrupt file?");
      if (!class_filter.empty() &&
          std::find(class_filter.begin(), class_filter.end(), rec[0]) == class_filter.end())
        continue;
      d.labels_.push_back(rec[0]);
      const size_t base = d.pixels_.size();
      d.pixels_.resize(base + 3072);
      for (int p = 0; p < 1024; ++p)
        for (int c = 0; c < 3; ++c) d.pixels_[base + p * 3 + c] = rec[1 + c * 1024 + p];
    }
  }
  CHECK(!d.labels_.empty(), "CIFAR-10: no images left after the class filter");
  return d;
}

void Cifar10::get(int64_t i, uint8_t* out) const {
  CHECK(i >= 0 && i < size(), "CIFAR-10 index " << i << " outside [0, " << size() << ")");
  std::memcpy(out, &pixels_[static_cast<size_t>(i) * 3072], 3072);
}

}  // namespace ddpm
