// Running a grid on host threads: one block at a time, each of its CUDA threads on a host
// thread of a pool, with the block's barriers and warp collectives as real synchronisation
// between those host threads (block.cpp). The runtime (runtime.h) checks a launch, then
// calls run_grid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/cuda_emulation/builtins.h"

namespace cuda_emu {

struct GridSpec {
  dim3 grid, block;
  size_t dynamic_smem = 0;  // bytes of dynamic shared memory per block
  const char* kernel = "";  // for messages
  size_t l1_bytes = 0;      // the L1 model's bytes a block (CopyReads); 0: l1_model_bytes()
};

// Calls body() once per CUDA thread of every block. Returns "" when the grid ran to the end,
// otherwise the first trap's message (kernel, block, thread, what). Blocks run in the order
// DDPM_EMU_BLOCK_ORDER names: forward (default), reverse or shuffled (a fixed permutation),
// so a kernel that depends on the order of its blocks can be shown to.
std::string run_grid(const GridSpec& spec, const std::function<void()>& body);

// The running block's dynamic shared memory: exactly GridSpec::dynamic_smem bytes on the
// heap (so AddressSanitizer reports an overrun), refilled with 0xff bytes at the start of
// every block: a float read before anything was written there is a NaN. Aligned to the 16
// bytes a kernel is promised and no more: its start is 16 bytes past a 1024-byte boundary.
void* dynamic_shared_memory();

// A warp collective with a word per lane: every active lane calls begin with its word and
// gets the 32 lanes' words (those of the lanes in *participants), valid until its next
// collective. A collective that lets lanes read what the others' words point to (WMMA: the
// others' fragments) calls end when done, so no lane moves on while others still read.
// Both calls are warp barriers.
const uint64_t* warp_collective_begin(const char* op, unsigned mask, uint64_t mine,
                                      unsigned* participants = nullptr);
void warp_collective_end();

// A warp collective over registers (mma.sync's and WMMA's fragments, the rows ldmatrix's
// lanes read, wgmma's descriptors at issue): all 32 lanes hand in
// `words` 32-bit registers each (at most kRegisterWords), and every lane gets all of them
// copied into `all` (lane l's at all[l * words]). One warp barrier, and it orders no
// memory: registers are private to their thread on a GPU, so no kernel can race on them,
// and a product orders nothing (ThreadSanitizer reports a kernel that relied on one to).
// The values are copies, so no lane reads another's registers after the exchange and no
// closing barrier is needed. (warp_collective_begin/end did this by pointer: two barriers,
// each two vector-clock merges per lane, most of an emulated mma kernel's time under
// ThreadSanitizer.)
constexpr int kRegisterWords = 8;
void warp_exchange_registers(const char* op, const uint32_t* mine, int words, uint32_t* all);

// cp.async (tests/cuda_emulation/ptx.h): the calling thread's copies in flight. A copy joins
// the open group when issued; commit closes the group; wait(n) hands back, oldest first, the
// copies of every committed group but the newest n (valid until the thread's next wait),
// which the caller then performs. So a copy lands at the latest moment the hardware may
// complete it, and a kernel that reads a pipeline stage before waiting for it reads stale
// data here. Cleared at each block start.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;  // src_bytes < bytes: the rest is zero-filled
  bool through_l1 = false;  // .ca (else .cg): counted in CopyReads below
};
void async_copy_issue(const AsyncCopy& copy);
void async_copy_commit();
const std::vector<AsyncCopy>& async_copy_wait(int newest_groups_left_pending);

// wgmma.mma_async (tests/cuda_emulation/ptx_sm90.h): the calling thread's products in
// flight, grouped like cp.async's copies (issue, commit, wait(n) hands back those of every
// committed group but the newest n, oldest first), each a function the caller runs when its
// wait returns it: the product reads shared memory and writes the accumulators then, the
// latest moment the hardware may, so a kernel that reuses either too early gets wrong
// numbers. Cleared at each block start.
// `reads` are the shared-memory byte ranges [begin, end) (host addresses) the product reads,
// given by the first lane of each warp: until the wait takes the product, a cp.async of the
// block whose destination overlaps one of them traps, since on a GPU the copy may land before
// the tensor cores have read what it overwrites.
struct AsyncMma {
  std::function<void()> perform;
  std::vector<std::pair<uintptr_t, uintptr_t>> reads;
};
void async_mma_issue(AsyncMma mma);
void async_mma_commit();
const std::vector<AsyncMma>& async_mma_wait(int newest_groups_left_pending);

// mbarrier and the bulk tensor copy (tests/cuda_emulation/ptx_sm90.h): the block's
// transaction barriers, by shared-memory address, and the copies that complete on them.
// A barrier counts the arrivals of its current phase down from the count it was initialised
// with, and its transaction bytes: arrive_expect_tx raises them and arrives (arrive only
// arrives), a bulk copy lowers them by its bytes when it is performed. The phase completes
// when both are zero; then the next begins with the initial count. A bulk copy is queued on
// its barrier's phase and performed by the first thread that waits on that barrier
// (try_wait_parity): the latest moment the hardware may land it, so shared memory read
// before the wait is stale here. Its destination is checked at issue against the wgmma
// products in flight, as a cp.async's is. try_wait_parity(bar, p) is true once the phase
// of parity p has completed (PTX: the current phase's parity is no longer p); false, it
// hands the host thread to the block's other threads first, and traps as a deadlock when
// the block has made no progress (no barrier or mbarrier event) through twice as many
// failed waits as it has threads. ThreadSanitizer: an arrival releases what its thread did,
// a wait that passes acquires it; a copy is performed after what its issuer did before the
// issue. Cleared at each block start.
struct BulkCopy {
  std::function<void()> perform;  // writes the destination, reading global memory
  void* dst;
  size_t bytes;
};
void mbarrier_init(void* bar, unsigned arrivals);
void mbarrier_arrive_expect_tx(void* bar, uint32_t bytes);
void mbarrier_arrive(void* bar);
void mbarrier_bulk_copy(void* bar, BulkCopy copy);
bool mbarrier_try_wait_parity(void* bar, unsigned parity);

// Shared-memory bank accounting of the 16-byte warp accesses of ptx.h: ldmatrix's rows and
// cp.async's shared destinations, per kernel, so that a tile layout's bank conflicts are
// counted on a machine without a GPU. The model (the one Nsight Compute's l1tex bank-
// conflict counters follow): shared memory serves a warp 128 bytes, one word from each of
// its 32 four-byte banks, per wavefront. A 16-byte access covers the four banks of one
// 16-byte "bank group", (address / 16) % 8, so eight of them take one wavefront when they
// fall in eight different groups; k different addresses in one group take k (one address
// read by several lanes is read once).
//   ldmatrix.x4   four phases, one per 8x8 matrix (lanes 8q..8q+7 give its rows): ideal 4
//   cp.async      the lanes in quarters (0-7, 8-15, ...), a phase each: ideal 4 for a full
//                 warp. The k-th cp.async of each lane of a warp is taken as one warp
//                 instruction; a warp whose lanes issued different numbers is not counted
//                 but tallied as unmatched, so a test can insist on none.
// Addresses are host addresses: a tile's groups are those of its offsets shifted by a
// multiple of 16 bytes, which permutes the groups and changes no count.
struct SharedWavefronts {
  uint64_t instructions = 0;  // warp-wide
  uint64_t wavefronts = 0;    // what the banks serve them in
  uint64_t ideal = 0;         // the same instructions without a conflict
};
// And where cp.async's sources come from, counted in 32-byte sectors (the unit L2 serves an
// SM in). A warp's k-th copies, taken as one instruction as above, read each distinct sector
// once. A .cg copy's sectors all come from L2. A .ca copy's go through a model of the L1 of
// the block's SM: a least-recently-used set of sectors, l1_model_bytes() of them per block
// (the block's share of what shared memory leaves of an SM's L1), empty at the block's
// start (its size: the kernel's carveout, runtime.h's l1_bytes_per_block, when it states
// one); a sector found there is a hit, any other comes from L2 and is kept. The block's
// warps are taken in the order the K loops keep them in: each warp's k-th instruction, then
// the (k+1)-th. Not modelled: another block on the same SM sharing its L1, and eviction by
// other loads (the kernels it is meant for load nothing else through L1 in their loops).
struct CopyReads {
  uint64_t l2_only = 0;    // sectors of .cg copies
  uint64_t l1_hits = 0;    // sectors of .ca copies the L1 model held
  uint64_t l1_misses = 0;  // sectors of .ca copies it did not: read from L2
};
struct SharedTraffic {
  SharedWavefronts ldmatrix, cp_async;
  uint64_t unmatched_cp_async_warps = 0;
  CopyReads reads;  // of the warps whose lanes matched
};
// The L1 model's size per block (CopyReads) for a kernel that states no carveout; 64 KB
// unless set. Process-wide.
size_t l1_model_bytes();
void set_l1_model_bytes(size_t bytes);
// Called by one lane of a warp's ldmatrix.x4 with the 32 lanes' row addresses.
void count_ldmatrix(const uint64_t* row_addresses);
// What the kernels (by their launch's name) did since the last reset.
std::map<std::string, SharedTraffic> shared_traffic();
void reset_shared_traffic();

// True while the calling thread runs a kernel.
bool in_kernel();

}  // namespace cuda_emu
