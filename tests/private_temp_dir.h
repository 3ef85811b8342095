// A temporary directory of its own for every test process. ctest runs tests in parallel, and
// one test may run in several executables at once (the GPU build, the emulation's asan and
// tsan builds), each writing under ::testing::TempDir() by fixed names
// ("cpu-bf16.safetensors"): with one /tmp for all, a test could load the checkpoint another
// process had just written (CI saw a bf16-activations step start from another test's
// weights). Included by the test mains only.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace ddpm::test {

// The directory googletest's TempDir() would give: TEST_TMPDIR, TMPDIR, else /tmp.
inline std::string base_temp_dir() {
  for (const char* name : {"TEST_TMPDIR", "TMPDIR"})
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return v;
  return "/tmp";
}

// Makes <base>/ddpm-test-XXXXXX, points TEST_TMPDIR (what TempDir() reads, at each call) at
// it and removes it at exit (a process a sanitizer stops, as the emulation's fault-injection
// tests expect, exits without that and leaves its directory behind). The ranks of one MPI
// job share one directory, named by the job's PMIx namespace, since they compare configs
// that hold paths under it (the data-parallel tests' out_dir); rank 0 removes it, after
// MPI_Finalize's fence.
inline void use_private_temp_dir() {
  static std::string dir;
  const char* job = std::getenv("PMIX_NAMESPACE");
  if (job != nullptr && *job != '\0') {
    dir = base_temp_dir() + "/ddpm-test-mpi-" + job;
    std::filesystem::create_directories(dir);
  } else {
    std::string pattern = base_temp_dir() + "/ddpm-test-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    if (mkdtemp(name.data()) == nullptr)
      throw std::runtime_error("cannot make a temporary directory " + pattern);
    dir = name.data();
  }
  setenv("TEST_TMPDIR", (dir + "/").c_str(), /*overwrite=*/1);
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (job == nullptr || rank == nullptr || std::string(rank) == "0")
    std::atexit([] {
      std::error_code ignored;  // a test that fails midway may leave anything behind
      std::filesystem::remove_all(dir, ignored);
    });
}

}  // namespace ddpm::test
