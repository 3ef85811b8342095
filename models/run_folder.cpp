#include "models/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/check.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"

namespace ddpm {

namespace fs = std::filesystem;

namespace {

// step_00000123.safetensors -> 123; -1 for any other name.
int64_t step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  const std::string prefix = "step_", suffix = ".safetensors";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, std::string>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir + "/ckpt", ec)) {
    const int64_t step = step_of(e.path());
    if (step >= 0 && e.is_regular_file()) out.emplace_back(step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The lines of metrics.jsonl whose step is (not) after `step`.
std::pair<std::string, std::string> split_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::string keep, later, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const bool after = !j.is_discarded() && j.is_object() && j.contains("step") &&
                       j["step"].is_number_integer() && j["step"].get<int64_t>() > step;
    (after ? later : keep) += line + "\n";
  }
  return {keep, later};
}

}  // namespace

RunFolder::RunFolder(const std::string& out_dir, const std::string& key) : dir_(out_dir) {
  CHECK(!out_dir.empty(), "key '" << key << "' is empty: name the folder the run writes to");
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(fs::absolute(out_dir), ec);
  CHECK(ec || canonical != canonical.root_path(),
        "key '" << key << "' is '" << out_dir << "', the root directory: refusing to write a run there");
  make_directories(dir_ + "/ckpt");
  make_directories(dir_ + "/samples");
  const std::string lock = dir_ + "/.lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  CHECK(lock_fd_ >= 0, "cannot open '" << lock << "': " << std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    THROW_ERROR("'" << out_dir << "' is in use by another trainer"
                    << (n > 0 ? " (pid " + std::string(pid, strcspn(pid, "\n")) + ")" : "")
                    << ": wait for it to finish, or give this run another " << key);
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) < 0) {
    // the pid is only for the message above; the lock itself is held
  }
  // With the lock held nobody else writes here: temporary files are leftovers of a write
  // that was killed (write_file_atomic names them <file>.tmp.<pid>.<n>).
  for (const std::string sub : {"", "/ckpt", "/samples"})
    for (const auto& e : fs::directory_iterator(dir_ + sub, ec))
      if (e.is_regular_file() && e.path().filename().string().find(".tmp.") != std::string::npos)
        fs::remove(e.path(), ec);
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string RunFolder::checkpoint_path(int64_t step) const {
  char name[48];
  std::snprintf(name, sizeof name, "step_%08lld.safetensors", static_cast<long long>(step));
  return dir_ + "/ckpt/" + name;
}

std::vector<std::pair<int64_t, std::string>> RunFolder::checkpoints() const {
  return checkpoints_in(dir_);
}

std::string RunFolder::describe_run() const {
  std::ostringstream os;
  const size_t n = checkpoints().size();
  if (n > 0) os << n << " checkpoint" << (n > 1 ? "s" : "") << " up to step " << checkpoints().back().first;
  if (fs::exists(metrics_path())) os << (n > 0 ? " and " : "") << "metrics.jsonl";
  return os.str();
}

void RunFolder::clear_run() {
  std::error_code ec;
  for (const auto& [step, path] : checkpoints()) fs::remove(path, ec);
  for (const auto& e : fs::directory_iterator(samples_dir(), ec))
    if (e.path().extension() == ".png") fs::remove(e.path(), ec);
  fs::remove(metrics_path(), ec);
  fs::remove(dir_ + "/config.json", ec);
  fs::remove(dir_ + "/run.json", ec);
  fs::remove(dir_ + "/report.html", ec);
}

std::vector<std::string> RunFolder::set_aside_after(int64_t step) {
  std::vector<std::string> moved;
  const std::string aside = dir_ + "/ckpt/abandoned";
  for (const auto& [s, path] : checkpoints()) {
    if (s <= step) continue;
    make_directories(aside);
    const std::string to = aside + "/" + fs::path(path).filename().string();
    fs::rename(path, to);
    moved.push_back(path + " -> " + to);
  }
  if (fs::exists(metrics_path())) {
    const auto [keep, later] = split_metrics(metrics_path(), step);
    if (!later.empty()) {
      const std::string to = dir_ + "/metrics.abandoned.jsonl";
      std::ofstream(to, std::ios::app) << later;
      write_file_atomic(metrics_path(), keep);
      moved.push_back("metrics.jsonl lines after step " + std::to_string(step) + " -> " + to);
    }
  }
  return moved;
}

void RunFolder::keep_newest(int64_t keep) {
  const auto all = checkpoints();
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove(all[i].second);
}

void RunFolder::append_metrics(const nlohmann::json& line) {
  const std::string text = line.dump() + "\n";
  const int fd = ::open(metrics_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  CHECK(fd >= 0, "cannot open '" << metrics_path() << "': " << std::strerror(errno));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  CHECK(ok, "write to '" << metrics_path() << "' failed: " << std::strerror(err));
}

void RunFolder::write_config(const nlohmann::json& config) {
  write_file_atomic(dir_ + "/config.json", config.dump(2) + "\n");
}

std::string latest_checkpoint(const std::string& out_dir) {
  const auto all = checkpoints_in(out_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      const SafetensorsFile f = read_safetensors(it->second);
      if (f.metadata.count("format") && f.metadata.count("step")) return it->second;
    } catch (const Error&) {
      // not a readable checkpoint: try the one before
    }
  }
  THROW_ERROR("--resume latest: '" << out_dir << "/ckpt' holds no readable checkpoint");
}

}  // namespace ddpm
