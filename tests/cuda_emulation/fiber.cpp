// Fibers for the CUDA emulation (fiber.h).
#include "tests/cuda_emulation/fiber.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// CUDA_EMU_ASAN / CUDA_EMU_TSAN: set by the build when the kernels are instrumented (the
// emulator itself is not; tests/cuda_emulation/CMakeLists.txt), or detected here.
#if !defined(CUDA_EMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#endif
#if !defined(CUDA_EMU_TSAN) && defined(__SANITIZE_THREAD__)
#define CUDA_EMU_TSAN 1
#endif

#if CUDA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if CUDA_EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" {
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#endif

// ---- the assembly switch (x86-64 System V) --------------------------------------------------
// cuda_emu_switch(save, load): push the callee-saved registers and the SSE/x87 control words
// on the current stack, store the stack pointer to *save, load `load` as the stack pointer
// and pop the same set from it; `ret` then continues wherever that stack was switched away
// from. A new fiber's stack is prepared (Fiber::reset) so that its first switch "returns"
// into cuda_emu_trampoline with r12 = the Fiber and r13 = the function to call with it.
#if defined(__x86_64__)
extern "C" void cuda_emu_switch(void** save, void* load);
extern "C" void cuda_emu_trampoline();
asm(R"(
    .text
    .globl cuda_emu_switch
    .hidden cuda_emu_switch
    .type cuda_emu_switch, @function
    .p2align 4
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_emu_switch, .-cuda_emu_switch

    .globl cuda_emu_trampoline
    .hidden cuda_emu_trampoline
    .type cuda_emu_trampoline, @function
    .p2align 4
cuda_emu_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    andq $-16, %rsp
    callq *%r13
    ud2
    .cfi_endproc
    .size cuda_emu_trampoline, .-cuda_emu_trampoline
)");
constexpr bool kHaveAssemblySwitch = true;
#else
constexpr bool kHaveAssemblySwitch = false;
extern "C" void cuda_emu_switch(void**, void*) { std::abort(); }
extern "C" void cuda_emu_trampoline() { std::abort(); }
#endif

namespace cuda_emu {
namespace {

// 256 KiB per fiber: a kernel's frames are small, but sanitizers enlarge them and a trap
// unwinds with exceptions. Reserved lazily (MAP_NORESERVE), so 1024 fibers cost address
// space, not memory.
constexpr size_t kStackBytes = 256 << 10;

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

bool want_ucontext() {
  static const bool want = [] {
    const char* env = std::getenv("DDPM_EMU_FIBERS");
    return !kHaveAssemblySwitch || (env != nullptr && std::strcmp(env, "ucontext") == 0);
  }();
  return want;
}

// The host thread's own context: where the scheduler runs, between fibers.
struct HostContext {
  void* sp = nullptr;
  ucontext_t context{};
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;
  const void* stack_bottom = nullptr;
  size_t stack_bytes = 0;
  HostContext() {
#if CUDA_EMU_TSAN
    tsan_fiber = __tsan_get_current_fiber();
#endif
    pthread_attr_t attr;
    void* bottom = nullptr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &bottom, &stack_bytes);
      pthread_attr_destroy(&attr);
    }
    stack_bottom = bottom;
  }
};
HostContext& host() {
  thread_local HostContext h;
  return h;
}

thread_local Fiber* t_starting = nullptr;  // for the ucontext entry, which takes no pointer

}  // namespace

// The first code a fiber runs, on its own stack.
struct FiberEntry {
  static void run(Fiber* f) {
    f->entry_(f->arg_);
    std::fprintf(stderr, "cuda emulation: a fiber's entry returned instead of finishing\n");
    std::abort();
  }
};

extern "C" void cuda_emu_fiber_main(Fiber* f) { FiberEntry::run(f); }

namespace {
void ucontext_entry() { cuda_emu_fiber_main(t_starting); }
}  // namespace

Fiber::Fiber() : stack_bytes_(kStackBytes) {
  const size_t guard = page_size();
  void* p = mmap(nullptr, stack_bytes_ + guard, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("cuda emulation: mmap of a fiber stack");
    std::abort();
  }
  mprotect(p, guard, PROT_NONE);  // an overflow faults instead of corrupting memory
  stack_ = static_cast<char*>(p) + guard;
#if CUDA_EMU_TSAN
  tsan_fiber_ = __tsan_create_fiber(0);
#endif
}

Fiber::~Fiber() {
#if CUDA_EMU_TSAN
  __tsan_destroy_fiber(tsan_fiber_);
#endif
  munmap(stack_ - page_size(), stack_bytes_ + page_size());
}

void Fiber::reset(void (*entry)(void*), void* arg) {
  entry_ = entry;
  arg_ = arg;
  asan_fake_stack_ = nullptr;
#if CUDA_EMU_ASAN
  // The last run ended by switching away with frames still live: their redzones are still
  // poisoned, and the new run's frames will overlap them.
  ASAN_UNPOISON_MEMORY_REGION(stack_, stack_bytes_);
#endif
  if (want_ucontext()) {
    getcontext(&context_);
    context_.uc_stack.ss_sp = stack_;
    context_.uc_stack.ss_size = stack_bytes_;
    context_.uc_link = nullptr;
    makecontext(&context_, ucontext_entry, 0);
    return;
  }
  // The frame cuda_emu_switch pops, from the lowest address: control words, r15, r14, r13
  // (the function), r12 (its argument), rbx, rbp, the return address (the trampoline).
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack_) + stack_bytes_) & ~uintptr_t(15);
  uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 10;
  const uint32_t control[2] = {0x1f80u, 0x037fu};  // default MXCSR and x87 control word
  std::memcpy(&frame[0], control, sizeof control);
  frame[1] = 0;                                                 // r15
  frame[2] = 0;                                                 // r14
  frame[3] = reinterpret_cast<uint64_t>(&cuda_emu_fiber_main);  // r13
  frame[4] = reinterpret_cast<uint64_t>(this);                  // r12
  frame[5] = 0;                                                 // rbx
  frame[6] = 0;                                                 // rbp
  frame[7] = reinterpret_cast<uint64_t>(&cuda_emu_trampoline);  // return address
  sp_ = frame;
}

void Fiber::started() {
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

void Fiber::switch_context(Fiber* from, Fiber* to, bool finished) {
  HostContext& h = host();
#if CUDA_EMU_TSAN
  __tsan_switch_to_fiber(to ? to->tsan_fiber_ : h.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if CUDA_EMU_ASAN
  void** fake = from ? &from->asan_fake_stack_ : &h.asan_fake_stack;
  __sanitizer_start_switch_fiber(finished ? nullptr : fake, to ? to->stack_ : h.stack_bottom,
                                 to ? to->stack_bytes_ : h.stack_bytes);
#else
  (void)finished;
#endif
  if (want_ucontext()) {
    t_starting = to;
    swapcontext(from ? &from->context_ : &h.context, to ? &to->context_ : &h.context);
  } else {
    cuda_emu_switch(from ? &from->sp_ : &h.sp, to ? to->sp_ : h.sp);
  }
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(from ? from->asan_fake_stack_ : h.asan_fake_stack, nullptr,
                                  nullptr);
#endif
}

#if CUDA_EMU_TSAN
IgnoreAccesses::IgnoreAccesses() { __tsan_ignore_thread_begin(); }
IgnoreAccesses::~IgnoreAccesses() { __tsan_ignore_thread_end(); }
void happens_before(void* token) { __tsan_release(token); }
void happens_after(void* token) { __tsan_acquire(token); }
#else
IgnoreAccesses::IgnoreAccesses() {}
IgnoreAccesses::~IgnoreAccesses() {}
void happens_before(void*) {}
void happens_after(void*) {}
#endif

}  // namespace cuda_emu
