// main() of the emulated test executables, which always run the same way however they are
// started (ctest, by hand, under gdb): on the emulated device, so a CUDA test may not skip
// (DDPM_REQUIRE_GPU), with the small shapes (DDPM_TEST_SMALL_SHAPES), with every new block
// of memory reading as NaN until written (DDPM_POISON_MEMORY, engine/device.h: the
// emulated cudaMalloc fills with NaN bytes too, but a block the caching allocator hands out
// again would otherwise keep its last user's values), and with the sanitizers stopping at
// the first report, and with a temporary directory of its own (tests/private_temp_dir.h).
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/private_temp_dir.h"

extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1";
}
extern "C" const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}

int main(int argc, char** argv) {
  setenv("DDPM_REQUIRE_GPU", "1", /*overwrite=*/0);
  setenv("DDPM_TEST_SMALL_SHAPES", "1", 0);
  setenv("DDPM_POISON_MEMORY", "1", 0);
  ddpm::test::use_private_temp_dir();  // tests/private_temp_dir.h: why
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
