// main() of the googletest executables, which run the same way however they are started
// (ctest, by hand, under gdb): with every new block of memory reading as NaN until written
// (DDPM_POISON_MEMORY, engine/device.h), so that a kernel reading what it did not write
// fails its test instead of finding zeros or the stale values of the block's last user.
// An explicit DDPM_POISON_MEMORY=0 turns it off (scripts/gpu-check.sh does, under
// compute-sanitizer's initcheck, which must see the memory uninitialised).
// Each process writes its temporary files in a directory of its own (tests/private_temp_dir.h).
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/private_temp_dir.h"

int main(int argc, char** argv) {
  setenv("DDPM_POISON_MEMORY", "1", /*overwrite=*/0);
  ddpm::test::use_private_temp_dir();  // tests/private_temp_dir.h: why
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
