// The block scheduler of the CUDA emulation.
//
// A grid runs one block at a time on the host thread that launched it. Each CUDA thread of
// the block is a fiber (fiber.h): the scheduler resumes the ready ones in thread order, and
// each runs until it reaches a barrier (or returns), then switches back. So thread 0 runs
// up to its first __syncthreads before thread 1 starts: a kernel that reads shared memory
// another thread has not written yet, because a barrier is missing, reads stale data here
// every time (and ThreadSanitizer reports the race: switches carry no synchronisation, only
// the barriers do). Static __shared__ arrays are one instance per kernel (builtins.h),
// which is right because blocks do not overlap.
//
// Barriers:
//   __syncthreads  counts arrivals; the last of the block's threads releases the others.
//                  All must arrive at the same barrier (file and line) and none may have
//                  returned: CUDA leaves both undefined, here they stop the kernel.
//   warp barrier   the same over the active (not returned) lanes of one warp, for
//                  __syncwarp, shuffles, votes and WMMA; all lanes must be in the same
//                  intrinsic. Shuffle words go through two alternating slot arrays, so one
//                  barrier per shuffle suffices.
//   deadlock       when no thread can run (e.g. half a warp in a shuffle, the rest at
//                  __syncthreads) the kernel stops with a message instead of hanging.
// A trap (cuda_emu::trap, or a failed check above) marks the block aborted; every waiting
// thread then resumes only to unwind (an exception), and the launch fails with the first
// message, as a kernel that traps on a GPU fails its launch.
//
// Fault injection for the negative-control tests: DDPM_EMU_SKIP_BARRIERS=FILE[:LINE] turns
// the __syncthreads calls of source files ending in FILE (at LINE only, if given) into no-ops.
#include "tests/cuda_emulation/block.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "tests/cuda_emulation/fiber.h"

// CUDA_EMU_ASAN: set by the build when the kernels are instrumented by AddressSanitizer (the
// emulator itself is not; CMakeLists.txt), or detected here.
#if !defined(CUDA_EMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#endif
#if CUDA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace cuda_emu {
namespace {

struct KernelTrap {};    // unwinds the thread that stopped the kernel
struct BlockAborted {};  // unwinds the other threads of the block

enum class State { Ready, Waiting, Done };
enum class WaitingFor { Nothing, Block, Warp };

struct Block;

// A thread's asynchronous operations in commit groups (cp.async's copies, wgmma's products):
// issued ones join the open group, commit closes it, and take(n) hands back, oldest first,
// those of every committed group but the newest n. The groups' vectors are kept and reused
// (spare, landed), so that a pipeline's commit and wait allocate nothing: under the
// sanitizers each allocation records a stack trace, which was a tenth of an emulated
// convolution's time.
template <class Op>
struct CommitGroups {
  std::vector<Op> open;
  std::deque<std::vector<Op>> committed;  // oldest first
  std::vector<std::vector<Op>> spare;     // emptied groups, kept for their capacity
  std::vector<Op> landed;                 // what the last take handed back
  void clear() {
    open.clear();
    committed.clear();
  }
  void commit() {
    committed.push_back(std::move(open));
    open.clear();
    if (!spare.empty()) {
      open = std::move(spare.back());
      spare.pop_back();
    }
  }
  // Valid until this thread's next take.
  const std::vector<Op>& take(int newest_left_pending) {
    landed.clear();
    while (committed.size() > static_cast<size_t>(std::max(0, newest_left_pending))) {
      std::vector<Op>& group = committed.front();
      for (Op& op : group) landed.push_back(std::move(op));
      group.clear();
      spare.push_back(std::move(group));
      committed.pop_front();
    }
    return landed;
  }
};

struct Thread {
  Fiber fiber;
  Block* block = nullptr;
  unsigned tid = 0, warp = 0, lane = 0;
  uint3 index{0, 0, 0};
  State state = State::Done;
  WaitingFor waiting_for = WaitingFor::Nothing;
  CommitGroups<AsyncCopy> copies;              // cp.async
  CommitGroups<AsyncMma> products;             // wgmma.mma_async
  struct IssuedCopy {
    uint64_t destination;  // its shared address (bank counts)
    uint64_t sector;       // its source's 32-byte sector, a 16-byte chunk lying in one
    bool read;             // src_bytes > 0
    bool through_l1;       // .ca (CopyReads)
  };
  std::vector<IssuedCopy> cp_async_issued;  // this block's, in issue order
};

// An mbarrier of the block (block.h: mbarrier_*), by its shared-memory address.
struct MBarrier {
  unsigned count = 0, pending = 0;  // arrivals per phase, and those the current one awaits
  int64_t tx = 0;                   // its transaction bytes outstanding
  uint64_t phase = 0;               // phases completed
  std::vector<BulkCopy> copies;     // issued in the current phase, not yet performed
  char token = 0;                   // ThreadSanitizer: arrivals and copies before the waits
  char issue_token = 0;             // ThreadSanitizer: a copy's issue before its writes
};

struct Warp {
  unsigned active = 0;  // a bit per lane that has not returned
  int arrived = 0;
  uint64_t generation = 0;
  const char* op = nullptr;
  uint64_t slots[2][32] = {};     // alternating by generation
  uint32_t registers[2][32 * kRegisterWords] = {};  // warp_exchange_registers', likewise
                                                    // (lane l's words at l * words: every
                                                    // lane of a collective gives as many)
  unsigned participants[2] = {};  // the active lanes when that generation's barrier released
  char token = 0;                 // ThreadSanitizer's synchronisation object for this warp
};

// A block's dynamic shared memory as a kernel is promised it, and no more: 16-byte aligned
// (DDPM_DYNAMIC_SHARED's __align__(16)), its start 16 bytes past a 1024-byte boundary, as
// on a GPU where static shared memory comes first. A kernel whose tiles need more (the
// 1024-byte atoms of wgmma's and the copy engine's 128-byte swizzle) must round up itself,
// as wgmma_tile.cuh's first_stage does: here nothing does it for the kernel. The window
// ends where its heap block does, so AddressSanitizer reports a read or write past its end
// as an overflow; the 16 bytes before it are poisoned.
class SharedWindow {
 public:
  static constexpr size_t kAtom = 1024, kPromised = 16;
  explicit SharedWindow(size_t bytes)
      : raw_(static_cast<unsigned char*>(
            ::operator new[](kPromised + bytes, std::align_val_t{kAtom}))) {
#if CUDA_EMU_ASAN
    __asan_poison_memory_region(raw_, kPromised);
#endif
  }
  ~SharedWindow() {
#if CUDA_EMU_ASAN
    __asan_unpoison_memory_region(raw_, kPromised);
#endif
    ::operator delete[](raw_, std::align_val_t{kAtom});
  }
  SharedWindow(const SharedWindow&) = delete;
  SharedWindow& operator=(const SharedWindow&) = delete;
  unsigned char* start() const { return raw_ + kPromised; }

 private:
  unsigned char* raw_;
};

struct Block {
  const GridSpec* spec = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Thread*> threads;
  uint3 index{0, 0, 0};
  unsigned alive = 0;          // threads that have not returned from the kernel
  unsigned arrived = 0;        // at the current __syncthreads
  const char* file = nullptr;  // where the current __syncthreads is
  int line = 0;
  std::vector<Warp> warps;
  SharedTraffic* traffic = nullptr;  // the kernel's counts (shared_traffic), found once a grid
  std::unique_ptr<SharedWindow> smem;
  bool aborted = false;
  std::string error;
  int product_reads_in_flight = 0;  // wgmma products with shared-memory reads not yet waited for
  std::map<uintptr_t, MBarrier> mbarriers;
  size_t idle_waits = 0;  // failed mbarrier waits since the last barrier or mbarrier event
  char barrier_token = 0;  // ThreadSanitizer: __syncthreads
  // ThreadSanitizer: launch -> block 0 -> block 1 -> ... -> host. The threads of block p
  // start by acquiring order_tokens[p % 2] and end by releasing order_tokens[(p + 1) % 2],
  // so each block comes after the one before (its shared memory is the same memory) while
  // the threads of one block stay unordered with respect to each other.
  char order_tokens[2] = {0, 0};
  uint64_t position = 0;  // of the running block in the grid's order
};

thread_local Thread* t_current = nullptr;  // the CUDA thread running on this host thread

Thread& current(const char* what) {
  if (t_current == nullptr) {
    std::fprintf(stderr, "cuda emulation: %s called outside a kernel\n", what);
    std::abort();
  }
  return *t_current;
}

std::string where(const Thread& t) {
  std::ostringstream os;
  os << "kernel " << t.block->spec->kernel << ", block (" << t.block->index.x << ","
     << t.block->index.y << "," << t.block->index.z << "), thread (" << t.index.x << ","
     << t.index.y << "," << t.index.z << ")";
  return os.str();
}

// Marks the block aborted with its first error; every waiting thread is woken to unwind.
void abort_block(Block& b, const std::string& message) {
  if (!b.aborted) {
    b.aborted = true;
    b.error = message;
  }
  for (Thread* t : b.threads)
    if (t->state == State::Waiting) t->state = State::Ready;
}

[[noreturn]] void trap_thread(Thread& t, const std::string& message) {
  abort_block(*t.block, where(t) + ": " + message);
  throw KernelTrap{};
}

// The CUDA built-in variables are per host thread; the fiber that runs sets them.
void enter(Thread& t) {
  t_current = &t;
  threadIdx = t.index;
  blockIdx = t.block->index;
  blockDim = t.block->spec->block;
  gridDim = t.block->spec->grid;
}

// The next thread after t (in thread order, wrapping around) that can run, or null.
Thread* next_ready(const Block& b, unsigned tid) {
  const size_t n = b.threads.size();
  for (size_t i = 1; i < n; ++i) {
    Thread* t = b.threads[(tid + i) % n];
    if (t->state == State::Ready) return t;
  }
  return nullptr;
}

// Hands the host thread to the next thread that can run; to the scheduler when none can.
void switch_away(Thread& t, bool finished) {
  Thread* next = next_ready(*t.block, t.tid);
  if (next == nullptr && t.state == State::Ready) return;  // only t can run: it goes on
  Fiber::switch_context(&t.fiber, next ? &next->fiber : nullptr, finished);
}

// The thread has arrived at a barrier (state Waiting, or already Ready if its arrival
// released the barrier): it lets the others run until it is released, then unwinds if the
// block was aborted meanwhile. `token`: what the barrier synchronises, for ThreadSanitizer
// (null: nothing, a barrier that only exchanges values).
void wait_for_release(Thread& t, void* token) {
  if (token != nullptr) happens_before(token);
  {
    IgnoreAccesses ignore;
    switch_away(t, false);
  }
  IgnoreAccesses ignore;
  enter(t);
  t.waiting_for = WaitingFor::Nothing;
  if (t.block->aborted) throw BlockAborted{};
  if (token != nullptr) happens_after(token);
}

void release_block_barrier(Block& b) {
  for (Thread* t : b.threads)
    if (t->state == State::Waiting && t->waiting_for == WaitingFor::Block) t->state = State::Ready;
  b.arrived = 0;
  b.file = nullptr;
}

void release_warp_barrier(Block& b, unsigned w) {
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned tid = w * 32 + lane;
    if (tid >= b.threads.size()) break;
    Thread* t = b.threads[tid];
    if (t->state == State::Waiting && t->waiting_for == WaitingFor::Warp) t->state = State::Ready;
  }
  Warp& warp = b.warps[w];
  warp.participants[warp.generation & 1] = warp.active;
  warp.arrived = 0;
  ++warp.generation;
}

// Arrival at the warp barrier of intrinsic `op`; returns the generation arrived at. With
// orders_memory, what each lane did before it happens before what every lane does after it
// (ThreadSanitizer); without, the lanes only meet.
uint64_t warp_barrier(Thread& t, const char* op, bool orders_memory = true) {
  Block& b = *t.block;
  Warp& w = b.warps[t.warp];
  uint64_t generation = 0;
  {
    IgnoreAccesses ignore;  // the warp's bookkeeping, shared by its lanes
    generation = w.generation;
    if (w.arrived == 0) {
      w.op = op;
    } else if (w.op != op && std::strcmp(w.op, op) != 0) {
      trap_thread(t, "lanes of warp " + std::to_string(t.warp) +
                         " meet in different intrinsics: " + w.op + " and " + op);
    }
    t.state = State::Waiting;
    t.waiting_for = WaitingFor::Warp;
    b.idle_waits = 0;
    if (++w.arrived == __builtin_popcount(w.active)) release_warp_barrier(b, t.warp);
  }
  wait_for_release(t, orders_memory ? &w.token : nullptr);
  return generation;
}

// The emulation runs a warp intrinsic over all active lanes of the warp: the mask must name
// the caller and every lane that has not returned.
void check_mask(Thread& t, unsigned mask, const char* op) {
  const unsigned active = t.block->warps[t.warp].active;
  if ((mask & (1u << t.lane)) == 0)
    trap_thread(t, std::string(op) + " with a mask that leaves out the calling lane");
  if ((mask & active) != active) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "%s with mask 0x%08x while lanes 0x%08x are active (the emulation supports "
                  "warp intrinsics over all active lanes)",
                  op, mask, active);
    trap_thread(t, text);
  }
}

// DDPM_EMU_SKIP_BARRIERS=FILE[:LINE]
struct SkipRule {
  std::string file;
  int line = 0;
  bool active = false;
};
const SkipRule& skip_rule() {
  static const SkipRule rule = [] {
    SkipRule r;
    const char* env = std::getenv("DDPM_EMU_SKIP_BARRIERS");
    if (env == nullptr || *env == '\0') return r;
    r.active = true;
    r.file = env;
    const size_t colon = r.file.rfind(':');
    if (colon != std::string::npos) {
      r.line = std::atoi(r.file.c_str() + colon + 1);
      r.file.resize(colon);
    }
    std::fprintf(stderr, "cuda emulation: fault injected: __syncthreads in *%s%s%s skipped\n",
                 r.file.c_str(), r.line ? ":" : "", r.line ? std::to_string(r.line).c_str() : "");
    return r;
  }();
  return rule;
}

bool barrier_skipped(const char* file, int line) {
  const SkipRule& r = skip_rule();
  if (!r.active || (r.line != 0 && r.line != line)) return false;
  const size_t n = std::strlen(file);
  return n >= r.file.size() && std::strcmp(file + n - r.file.size(), r.file.c_str()) == 0;
}

// ---- walking the grid ---------------------------------------------------------------------

// The order blocks run in: position i -> linear block index (DDPM_EMU_BLOCK_ORDER).
class BlockOrder {
 public:
  explicit BlockOrder(uint64_t n) : n_(n) {
    const char* env = std::getenv("DDPM_EMU_BLOCK_ORDER");
    const std::string mode = env ? env : "forward";
    if (mode == "reverse") {
      kind_ = Kind::Reverse;
    } else if (mode == "shuffled" && n_ > 1) {
      kind_ = Kind::Shuffled;  // i -> (i * stride + 7) mod n, a bijection for stride coprime to n
      stride_ = 0x9E3779B97F4A7C15ull % n_;
      while (std::gcd(stride_, n_) != 1) ++stride_;
    }
  }
  uint64_t operator[](uint64_t i) const {
    switch (kind_) {
      case Kind::Reverse:
        return n_ - 1 - i;
      case Kind::Shuffled:
        return static_cast<uint64_t>((static_cast<Wide>(i) * stride_ + 7) % n_);
      default:
        return i;
    }
  }

 private:
  __extension__ typedef unsigned __int128 Wide;
  enum class Kind { Forward, Reverse, Shuffled } kind_ = Kind::Forward;
  uint64_t n_, stride_ = 1;
};

// The fibers of this host thread, kept between launches (up to 1024).
std::vector<std::unique_ptr<Thread>>& thread_pool() {
  thread_local std::vector<std::unique_ptr<Thread>> pool;
  return pool;
}

// The body of every CUDA thread.
void thread_main(void* p) {
  Thread& t = *static_cast<Thread*>(p);
  t.fiber.started();
  Block& b = *t.block;
  {
    IgnoreAccesses ignore;
    enter(t);
  }
  happens_after(&b.order_tokens[b.position % 2]);
  try {
    (*b.body)();
  } catch (const KernelTrap&) {
  } catch (const BlockAborted&) {
  } catch (const std::exception& e) {
    IgnoreAccesses ignore;
    abort_block(b, where(t) + ": exception: " + e.what());
  }
  {
    IgnoreAccesses ignore;
    Warp& w = b.warps[t.warp];
    --b.alive;
    w.active &= ~(1u << t.lane);
    if (!b.aborted) {
      if (b.arrived > 0) {
        abort_block(b, where(t) + ": returned while " + std::to_string(b.arrived) +
                           " threads wait at __syncthreads " + b.file + ":" +
                           std::to_string(b.line) + " (every thread of the block must reach it)");
      } else if (w.arrived > 0 && w.arrived == __builtin_popcount(w.active)) {
        release_warp_barrier(b, t.warp);
      }
    }
    t.state = State::Done;
    t_current = nullptr;
  }
  happens_before(&b.order_tokens[(b.position + 1) % 2]);
  switch_away(t, true);  // outside IgnoreAccesses: its count belongs to this fiber, reused later
  std::fprintf(stderr, "cuda emulation: a finished thread was resumed\n");
  std::abort();
}

std::string describe_waits(const Block& b) {
  std::ostringstream os;
  os << b.alive << " threads wait";
  if (b.arrived > 0) os << "; " << b.arrived << " at __syncthreads " << b.file << ":" << b.line;
  for (size_t w = 0; w < b.warps.size(); ++w)
    if (b.warps[w].arrived > 0)
      os << "; " << b.warps[w].arrived << " lanes of warp " << w << " in " << b.warps[w].op;
  return os.str();
}

// Runs one block to the end. The threads hand the host thread to each other at barriers
// (switch_away); it comes back here only when none can run: all are done, or a deadlock.
void run_block(Block& b) {
  for (;;) {
    auto ready = std::find_if(b.threads.begin(), b.threads.end(),
                              [](const Thread* t) { return t->state == State::Ready; });
    if (ready == b.threads.end()) {
      auto waiting = std::find_if(b.threads.begin(), b.threads.end(),
                                  [](const Thread* t) { return t->state != State::Done; });
      if (waiting == b.threads.end()) return;
      abort_block(b, where(**waiting) + ": deadlock: " + describe_waits(b));  // wakes them
      continue;
    }
    Fiber::switch_context(nullptr, &(*ready)->fiber);
  }
}

std::mutex g_launch_mutex;  // one grid at a time, like a single stream

// ---- shared-memory bank accounting (block.h) ----------------------------------------------

std::map<std::string, SharedTraffic> g_shared_traffic;  // written by the launching thread

// The wavefronts n 16-byte accesses take: the most different addresses in one bank group.
uint64_t wavefronts_of_16_byte_accesses(const uint64_t* address, int n) {
  int most = 0;
  for (int group = 0; group < 8; ++group) {
    int distinct = 0;
    for (int i = 0; i < n; ++i) {
      if ((address[i] / 16) % 8 != uint64_t(group)) continue;
      bool seen = false;
      for (int j = 0; j < i; ++j) seen = seen || address[j] == address[i];
      distinct += seen ? 0 : 1;
    }
    most = std::max(most, distinct);
  }
  return uint64_t(most);
}

size_t g_l1_model_bytes = 64 * 1024;

// A least-recently-used set of sectors, `capacity` of them (block.h: CopyReads).
class SectorLru {
 public:
  explicit SectorLru(size_t capacity) : capacity_(capacity) {}
  // True when `sector` was held; either way it is the most recent afterwards.
  bool touch(uint64_t sector) {
    const auto found = where_.find(sector);
    if (found != where_.end()) {
      order_.splice(order_.begin(), order_, found->second);
      return true;
    }
    if (capacity_ == 0) return false;
    if (order_.size() == capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(sector);
    where_[sector] = order_.begin();
    return false;
  }

 private:
  size_t capacity_;
  std::list<uint64_t> order_;  // most recent first
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

// Where the sources of warp instruction k (the lanes [first, last) of the block's threads)
// came from: each distinct sector once, by the copies' kind.
void count_copy_reads(const Block& b, size_t first, size_t last, size_t k, SectorLru& l1) {
  CopyReads& reads = b.traffic->reads;
  std::vector<uint64_t> seen;
  for (size_t t = first; t < last; ++t) {
    const Thread::IssuedCopy& c = b.threads[t]->cp_async_issued[k];
    if (!c.read || std::find(seen.begin(), seen.end(), c.sector) != seen.end()) continue;
    seen.push_back(c.sector);
    if (!c.through_l1)
      ++reads.l2_only;
    else if (l1.touch(c.sector))
      ++reads.l1_hits;
    else
      ++reads.l1_misses;
  }
}

// The cp.async of each warp of the finished block b, its lanes' k-th copies taken together:
// their shared destinations' wavefronts, and (in the order the K loops keep: every warp's
// k-th instruction, then the (k+1)-th) where their sources came from.
void count_cp_async(const Block& b) {
  SharedTraffic& traffic = *b.traffic;
  std::vector<size_t> issued(b.warps.size(), 0);  // each warp's copies a lane; 0: unmatched
  for (size_t w = 0; w < b.warps.size(); ++w) {
    const size_t first = 32 * w, last = std::min(b.threads.size(), first + 32);
    const size_t n = b.threads[first]->cp_async_issued.size();
    bool matched = true;
    for (size_t t = first; t < last; ++t)
      matched = matched && b.threads[t]->cp_async_issued.size() == n;
    if (!matched) {
      ++traffic.unmatched_cp_async_warps;
      continue;
    }
    issued[w] = n;
    for (size_t k = 0; k < n; ++k) {
      ++traffic.cp_async.instructions;
      for (size_t quarter = first; quarter < last; quarter += 8) {
        uint64_t address[8];
        const int count = static_cast<int>(std::min<size_t>(8, last - quarter));
        for (int i = 0; i < count; ++i)
          address[i] = b.threads[quarter + i]->cp_async_issued[k].destination;
        traffic.cp_async.wavefronts += wavefronts_of_16_byte_accesses(address, count);
        ++traffic.cp_async.ideal;
      }
    }
  }
  SectorLru l1((b.spec->l1_bytes ? b.spec->l1_bytes : g_l1_model_bytes) / 32);
  const size_t most = *std::max_element(issued.begin(), issued.end());
  for (size_t k = 0; k < most; ++k)
    for (size_t w = 0; w < b.warps.size(); ++w) {
      const size_t first = 32 * w, last = std::min(b.threads.size(), first + 32);
      if (k < issued[w]) count_copy_reads(b, first, last, k, l1);
    }
}

}  // namespace

bool in_kernel() {
  return t_current != nullptr;
}

std::string run_grid(const GridSpec& spec, const std::function<void()>& body) {
  std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
  const unsigned threads = spec.block.x * spec.block.y * spec.block.z;
  const uint64_t blocks = uint64_t(spec.grid.x) * spec.grid.y * spec.grid.z;
  if (threads == 0 || blocks == 0) return "";
  // New fibers are created outside IgnoreAccesses: ThreadSanitizer's fibers start with the
  // ignore state of the code that creates them.
  auto& pool = thread_pool();
  while (pool.size() < threads) pool.push_back(std::make_unique<Thread>());
  IgnoreAccesses ignore;  // the scheduler's bookkeeping is invisible to ThreadSanitizer
  skip_rule();            // read once here, before any kernel thread
  Block b;
  b.spec = &spec;
  b.body = &body;
  b.warps.resize((threads + 31) / 32);
  b.traffic = &g_shared_traffic[spec.kernel];
  if (spec.dynamic_smem > 0) b.smem = std::make_unique<SharedWindow>(spec.dynamic_smem);
  for (unsigned tid = 0; tid < threads; ++tid) b.threads.push_back(pool[tid].get());
  happens_before(&b.order_tokens[0]);  // the host's writes before the launch

  const BlockOrder order(blocks);
  for (b.position = 0; b.position < blocks && !b.aborted; ++b.position) {
    const uint64_t linear = order[b.position];
    b.index = uint3{static_cast<unsigned>(linear % spec.grid.x),
                    static_cast<unsigned>(linear / spec.grid.x % spec.grid.y),
                    static_cast<unsigned>(linear / (uint64_t(spec.grid.x) * spec.grid.y))};
    b.alive = threads;
    b.arrived = 0;
    b.product_reads_in_flight = 0;  // what a thread of the previous block left in flight
    b.mbarriers.clear();
    b.idle_waits = 0;
    for (size_t w = 0; w < b.warps.size(); ++w) {
      const unsigned lanes = std::min(32u, threads - static_cast<unsigned>(w) * 32u);
      b.warps[w].active = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
      b.warps[w].arrived = 0;
    }
    if (spec.dynamic_smem > 0) std::memset(b.smem->start(), 0xff, spec.dynamic_smem);
    for (unsigned tid = 0; tid < threads; ++tid) {
      Thread& t = *b.threads[tid];
      t.block = &b;
      t.tid = tid;
      t.warp = tid / 32;
      t.lane = tid % 32;
      t.index = uint3{tid % spec.block.x, tid / spec.block.x % spec.block.y,
                      tid / (spec.block.x * spec.block.y)};
      t.state = State::Ready;
      t.waiting_for = WaitingFor::Nothing;
      t.copies.clear();  // what a thread of the previous block left in flight
      t.products.clear();
      t.cp_async_issued.clear();
      t.fiber.reset(thread_main, &t);
    }
    run_block(b);
    count_cp_async(b);
  }
  happens_after(&b.order_tokens[b.position % 2]);  // the blocks' writes, for the host
  return b.error;
}

void* dynamic_shared_memory() {
  const Block& b = *current("dynamic shared memory").block;
  return b.smem ? b.smem->start() : nullptr;
}

void syncthreads(const char* file, int line) {
  Thread& t = current("__syncthreads");
  Block& b = *t.block;
  {
    IgnoreAccesses ignore;
    if (barrier_skipped(file, line)) return;
    if (b.aborted) throw BlockAborted{};
    if (b.alive != b.threads.size())
      trap_thread(t,
                  "__syncthreads at " + std::string(file) + ":" + std::to_string(line) + " after " +
                      std::to_string(b.threads.size() - b.alive) +
                      " threads of the block returned (every thread of the block must reach it)");
    if (b.arrived == 0) {
      b.file = file;
      b.line = line;
    } else if (b.line != line || (b.file != file && std::strcmp(b.file, file) != 0)) {
      trap_thread(t, "reached __syncthreads at " + std::string(file) + ":" + std::to_string(line) +
                         " while " + std::to_string(b.arrived) + " threads wait at " + b.file +
                         ":" + std::to_string(b.line) + " (divergent barriers)");
    }
    t.state = State::Waiting;
    t.waiting_for = WaitingFor::Block;
    b.idle_waits = 0;
    if (++b.arrived == b.alive) release_block_barrier(b);
  }
  wait_for_release(t, &b.barrier_token);
}

namespace {

// The lanes' words (warp_collective_begin); orders_memory as for warp_barrier.
const uint64_t* exchange(const char* op, unsigned mask, uint64_t mine, unsigned* participants,
                         bool orders_memory) {
  Thread& t = current(op);
  Block& b = *t.block;
  Warp& w = b.warps[t.warp];
  {
    IgnoreAccesses ignore;
    if (b.aborted) throw BlockAborted{};
    check_mask(t, mask, op);
    w.slots[w.generation & 1][t.lane] = mine;
  }
  const uint64_t generation = warp_barrier(t, op, orders_memory);
  IgnoreAccesses ignore;
  if (participants != nullptr) *participants = w.participants[generation & 1];
  return w.slots[generation & 1];
}

}  // namespace

// The collectives whose lanes read what the others' words point to (their fragments, their
// rows of shared memory) order memory, like __syncwarp.
const uint64_t* warp_collective_begin(const char* op, unsigned mask, uint64_t mine,
                                      unsigned* participants) {
  return exchange(op, mask, mine, participants, true);
}

void warp_exchange_registers(const char* op, const uint32_t* mine, int words, uint32_t* all) {
  Thread& t = current(op);
  Block& b = *t.block;
  Warp& w = b.warps[t.warp];
  const size_t bytes = sizeof(uint32_t) * static_cast<size_t>(words);
  {
    IgnoreAccesses ignore;  // the emulation's copies, not the kernel's accesses
    if (b.aborted) throw BlockAborted{};
    check_mask(t, 0xffffffffu, op);
    if (words < 1 || words > kRegisterWords)
      trap_thread(t, std::string(op) + ": " + std::to_string(words) +
                         " registers a lane (the emulation exchanges 1 to " +
                         std::to_string(kRegisterWords) + ")");
    std::memcpy(&w.registers[w.generation & 1][t.lane * words], mine, bytes);
  }
  const uint64_t generation = warp_barrier(t, op, /*orders_memory=*/false);
  IgnoreAccesses ignore;
  if (w.participants[generation & 1] != 0xffffffffu)
    trap_thread(t, std::string(op) + " needs all 32 lanes");
  std::memcpy(all, w.registers[generation & 1], 32 * bytes);  // the lanes' words, packed
}

void warp_collective_end() {
  Thread& t = current("a warp collective");
  {
    IgnoreAccesses ignore;
    if (t.block->aborted) throw BlockAborted{};
  }
  warp_barrier(t, "the end of a warp collective");
}

void syncwarp(unsigned mask) {
  Thread& t = current("__syncwarp");
  {
    IgnoreAccesses ignore;
    if (t.block->aborted) throw BlockAborted{};
    check_mask(t, mask, "__syncwarp");
  }
  warp_barrier(t, "__syncwarp");
}

// Shuffles and votes exchange values, not memory: CUDA's memory model gives them no
// ordering (only __syncwarp's), so ThreadSanitizer is told of none. A kernel that relied on
// a shuffle to order a shared-memory write and another lane's read is reported. (It also
// spares every shuffle ThreadSanitizer's two vector-clock merges per lane, which were most
// of a reduction kernel's emulated time.)
uint64_t warp_shuffle(const char* op, unsigned mask, uint64_t mine, int source) {
  unsigned active = 0;
  const uint64_t* all = exchange(op, mask, mine, &active, false);
  IgnoreAccesses ignore;
  if (source < 0 || source > 31 || (active & (1u << source)) == 0)
    trap_thread(current(op), std::string(op) + " reads lane " + std::to_string(source) +
                                 ", which is not active (the value is undefined in CUDA)");
  return all[source];
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  unsigned active = 0;
  const uint64_t* all = exchange("__ballot_sync", mask, predicate ? 1 : 0, &active, false);
  IgnoreAccesses ignore;
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane)
    if ((active & (1u << lane)) && all[lane]) ballot |= 1u << lane;
  return ballot & mask;
}

unsigned warp_active_mask() {
  Thread& t = current("__activemask");
  IgnoreAccesses ignore;
  return t.block->warps[t.warp].active;
}

// Traps when a copy's destination overlaps what a wgmma of the block still in flight reads.
void check_no_product_reads(Thread& t, const void* dst, size_t bytes, const char* op) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(dst), end = begin + bytes;
  for (const Thread* other : t.block->threads) {
    auto check = [&](const std::vector<AsyncMma>& products) {
      for (const AsyncMma& p : products)
        for (const auto& [lo, hi] : p.reads)
          if (begin < hi && lo < end)
            trap_thread(t, std::string(op) +
                               " writes shared memory that a wgmma.mma_async of thread " +
                               std::to_string(other->tid) +
                               " still in flight reads (not yet waited for)");
    };
    check(other->products.open);
    for (const std::vector<AsyncMma>& group : other->products.committed) check(group);
  }
}

void async_copy_issue(const AsyncCopy& copy) {
  Thread& t = current("cp.async");
  if (t.block->product_reads_in_flight > 0) {  // never in a kernel without wgmma
    IgnoreAccesses ignore;
    check_no_product_reads(t, copy.dst, copy.bytes, "cp.async");
  }
  t.copies.open.push_back(copy);
  t.cp_async_issued.push_back(
      {to_bits(copy.dst), to_bits(copy.src) / 32, copy.src_bytes > 0, copy.through_l1});
}

void count_ldmatrix(const uint64_t* row_addresses) {
  Thread& t = current("ldmatrix");
  IgnoreAccesses ignore;  // one lane of each warp writes the totals; blocks run in turn
  SharedWavefronts& counts = t.block->traffic->ldmatrix;
  ++counts.instructions;
  for (int matrix = 0; matrix < 4; ++matrix) {
    counts.wavefronts += wavefronts_of_16_byte_accesses(row_addresses + 8 * matrix, 8);
    ++counts.ideal;
  }
}

std::map<std::string, SharedTraffic> shared_traffic() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  return g_shared_traffic;
}

size_t l1_model_bytes() { return g_l1_model_bytes; }
void set_l1_model_bytes(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_l1_model_bytes = bytes;
}

void reset_shared_traffic() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_shared_traffic.clear();
}

void async_copy_commit() { current("cp.async.commit_group").copies.commit(); }

const std::vector<AsyncCopy>& async_copy_wait(int newest_groups_left_pending) {
  return current("cp.async.wait_group").copies.take(newest_groups_left_pending);
}

void async_mma_issue(AsyncMma mma) {
  Thread& t = current("wgmma.mma_async");
  if (!mma.reads.empty()) {
    IgnoreAccesses ignore;  // the block's threads take turns (fibers)
    ++t.block->product_reads_in_flight;
  }
  t.products.open.push_back(std::move(mma));
}

void async_mma_commit() { current("wgmma.commit_group").products.commit(); }

const std::vector<AsyncMma>& async_mma_wait(int newest_groups_left_pending) {
  Thread& t = current("wgmma.wait_group");
  const std::vector<AsyncMma>& done = t.products.take(newest_groups_left_pending);
  IgnoreAccesses ignore;
  for (const AsyncMma& p : done) t.block->product_reads_in_flight -= p.reads.empty() ? 0 : 1;
  return done;
}

// ---- mbarriers and bulk copies (block.h) ---------------------------------------------------

MBarrier& mbarrier_at(Thread& t, void* bar, const char* op) {
  const auto found = t.block->mbarriers.find(reinterpret_cast<uintptr_t>(bar));
  if (found == t.block->mbarriers.end())
    trap_thread(t, std::string(op) + ": no mbarrier was initialised at this address in this "
                                     "block (mbarrier.init)");
  return found->second;
}

// Ends the current phase if its arrivals and transaction bytes are all in.
void complete_phase_if_done(MBarrier& m) {
  if (m.pending != 0 || m.tx != 0) return;
  ++m.phase;
  m.pending = m.count;
}

void mbarrier_init(void* bar, unsigned arrivals) {
  Thread& t = current("mbarrier.init");
  IgnoreAccesses ignore;
  if (reinterpret_cast<uintptr_t>(bar) % 8 != 0)
    trap_thread(t, "mbarrier.init: the barrier's address is not 8-byte aligned");
  if (arrivals == 0 || arrivals >= (1u << 20))
    trap_thread(t, "mbarrier.init: an arrival count of " + std::to_string(arrivals) +
                       " (the PTX ISA allows 1 to 2^20 - 1)");
  MBarrier& m = t.block->mbarriers[reinterpret_cast<uintptr_t>(bar)];
  m.count = m.pending = arrivals;
  m.tx = 0;
  m.phase = 0;
  m.copies.clear();
  t.block->idle_waits = 0;
}

namespace {

void arrive(void* bar, uint32_t bytes, const char* op) {
  Thread& t = current(op);
  MBarrier* m = nullptr;
  {
    IgnoreAccesses ignore;
    m = &mbarrier_at(t, bar, op);
    m->tx += bytes;
    --m->pending;
    complete_phase_if_done(*m);
    t.block->idle_waits = 0;
  }
  happens_before(&m->token);  // an arrival releases what its thread did before it
}

}  // namespace

void mbarrier_arrive_expect_tx(void* bar, uint32_t bytes) {
  arrive(bar, bytes, "mbarrier.arrive.expect_tx");
}

void mbarrier_arrive(void* bar) { arrive(bar, 0, "mbarrier.arrive"); }

void mbarrier_bulk_copy(void* bar, BulkCopy copy) {
  Thread& t = current("cp.async.bulk.tensor");
  IgnoreAccesses ignore;
  MBarrier& m = mbarrier_at(t, bar, "cp.async.bulk.tensor");
  if (t.block->product_reads_in_flight > 0)
    check_no_product_reads(t, copy.dst, copy.bytes, "cp.async.bulk.tensor");
  m.copies.push_back(std::move(copy));
  t.block->idle_waits = 0;
  happens_before(&m.issue_token);  // the copy engine starts after what its issuer did
}

bool mbarrier_try_wait_parity(void* bar, unsigned parity) {
  Thread& t = current("mbarrier.try_wait.parity");
  Block& b = *t.block;
  MBarrier* m = nullptr;
  std::vector<BulkCopy> landing;
  {
    IgnoreAccesses ignore;
    if (b.aborted) throw BlockAborted{};
    m = &mbarrier_at(t, bar, "mbarrier.try_wait.parity");
    if ((m->phase & 1) == (parity & 1)) landing.swap(m->copies);  // that phase is the current one
  }
  if (!landing.empty()) {
    // Performed by this thread for the copy engine: after what the issuing thread did (say,
    // it waited until the consumers released the stage), which this thread may not have
    // seen yet.
    happens_after(&m->issue_token);
    for (BulkCopy& copy : landing) copy.perform();  // seen by the sanitizers: the copy's writes
    {
      IgnoreAccesses ignore;
      for (const BulkCopy& copy : landing) m->tx -= static_cast<int64_t>(copy.bytes);
      complete_phase_if_done(*m);
      b.idle_waits = 0;
    }
    happens_before(&m->token);
  }
  bool done = false;
  {
    IgnoreAccesses ignore;
    done = (m->phase & 1) != (parity & 1);
  }
  if (done) {
    happens_after(&m->token);
    return true;
  }
  IgnoreAccesses ignore;  // not yet: the block's other threads run first
  if (++b.idle_waits > 2 * b.threads.size())
    trap_thread(t, "deadlock: waits for the phase of parity " + std::to_string(parity & 1) +
                       " of an mbarrier (" + std::to_string(m->pending) + " of " +
                       std::to_string(m->count) + " arrivals and " + std::to_string(m->tx) +
                       " transaction bytes outstanding), which no thread of the block completes");
  switch_away(t, false);  // t stays ready: it runs again after the others
  enter(t);
  if (b.aborted) throw BlockAborted{};
  return false;
}

int lane_id() {
  return static_cast<int>(current("a warp intrinsic").lane);
}

void trap(const char* message) {
  Thread& t = current("trap");
  IgnoreAccesses ignore;
  trap_thread(t, message);
}

}  // namespace cuda_emu
