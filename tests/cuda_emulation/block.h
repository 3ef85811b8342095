// Running a grid on host threads: one block at a time, each of its CUDA threads on a host
// thread of a pool, with the block's barriers and warp collectives as real synchronisation
// between those host threads (block.cpp). The runtime (runtime.h) checks a launch, then
// calls run_grid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tests/cuda_emulation/builtins.h"

namespace cuda_emu {

struct GridSpec {
  dim3 grid, block;
  size_t dynamic_smem = 0;  // bytes of dynamic shared memory per block
  const char* kernel = "";  // for messages
};

// Calls body() once per CUDA thread of every block. Returns "" when the grid ran to the end,
// otherwise the first trap's message (kernel, block, thread, what). Blocks run in the order
// DDPM_EMU_BLOCK_ORDER names: forward (default), reverse or shuffled (a fixed permutation),
// so a kernel that depends on the order of its blocks can be shown to.
std::string run_grid(const GridSpec& spec, const std::function<void()>& body);

// The running block's dynamic shared memory: exactly GridSpec::dynamic_smem bytes on the
// heap (so AddressSanitizer reports an overrun), refilled with 0xff bytes at the start of
// every block: a float read before anything was written there is a NaN.
void* dynamic_shared_memory();

// A warp collective with a word per lane: every active lane calls begin with its word and
// gets the 32 lanes' words (those of the lanes in *participants), valid until its next
// collective. A collective that lets lanes read what the others' words point to (WMMA: the
// others' fragments) calls end when done, so no lane moves on while others still read.
// Both calls are warp barriers.
const uint64_t* warp_collective_begin(const char* op, unsigned mask, uint64_t mine,
                                      unsigned* participants = nullptr);
void warp_collective_end();

// cp.async (tests/cuda_emulation/ptx.h): the calling thread's copies in flight. A copy joins
// the open group when issued; commit closes the group; wait(n) hands back, oldest first, the
// copies of every committed group but the newest n, which the caller then performs. So a
// copy lands at the latest moment the hardware may complete it, and a kernel that reads a
// pipeline stage before waiting for it reads stale data here. Cleared at each block start.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;  // src_bytes < bytes: the rest is zero-filled
};
void async_copy_issue(const AsyncCopy& copy);
void async_copy_commit();
std::vector<AsyncCopy> async_copy_wait(int newest_groups_left_pending);

// True while the calling thread runs a kernel.
bool in_kernel();

}  // namespace cuda_emu
