// Fibers: a stack and a saved register context each, switched by hand on one host thread.
// The emulation runs every CUDA thread of a block as a fiber (block.cpp): a barrier is a
// switch to the next thread that can run, which costs tens of nanoseconds, where an OS
// thread per CUDA thread cost microseconds per barrier and made the emulated suites 100x
// slower.
//
// Two ways to switch: a dozen lines of assembly on x86-64 (fiber.cpp), and the portable
// ucontext functions elsewhere (or with DDPM_EMU_FIBERS=ucontext; each swapcontext makes a
// system call for the signal mask, ~0.3 us). The sanitizers are told about every switch
// (AddressSanitizer: which stack is live; ThreadSanitizer: which fiber runs, switching with
// no synchronisation, so the only happens-before edges between CUDA threads are the ones
// the emulated barriers declare).
#pragma once

#include <ucontext.h>

#include <cstddef>

namespace cuda_emu {

class Fiber {
 public:
  Fiber();
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // The next switch to this fiber runs entry(arg) from the top of its stack; entry's first
  // act is started(), its last a switch with `finished` set (it must not return).
  void reset(void (*entry)(void*), void* arg);
  void started();

  // The running context continues in `to`. Either side may be null: the host thread's own
  // stack (the scheduler). Returns when something switches back to `from`. `finished`: the
  // caller is a fiber that will not be switched to again until reset.
  static void switch_context(Fiber* from, Fiber* to, bool finished = false);

 private:
  friend struct FiberEntry;

  char* stack_ = nullptr;  // mmap'd, with a guard page below it
  size_t stack_bytes_ = 0;
  void* sp_ = nullptr;  // saved stack pointer (assembly switch)
  ucontext_t context_{};
  void (*entry_)(void*) = nullptr;
  void* arg_ = nullptr;
  void* tsan_fiber_ = nullptr;
  void* asan_fake_stack_ = nullptr;
};

// ThreadSanitizer annotations (no-ops in other builds): the emulator's own bookkeeping is
// hidden from it (IgnoreAccesses), and barriers are declared as release/acquire on a token.
class IgnoreAccesses {
 public:
  IgnoreAccesses();
  ~IgnoreAccesses();
  IgnoreAccesses(const IgnoreAccesses&) = delete;
  IgnoreAccesses& operator=(const IgnoreAccesses&) = delete;
};
void happens_before(void* token);  // everything this fiber did so far ...
void happens_after(void* token);   // ... is visible to the fiber that calls this

}  // namespace cuda_emu
