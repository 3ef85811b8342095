// NVTX ranges mark spans on the Nsight timeline; under the CPU emulation there is no
// timeline, so they do nothing.
#pragma once

inline int nvtxRangePushA(const char*) {
  return 0;
}
inline int nvtxRangePop() {
  return 0;
}
