// The CUDA runtime API, emulated: the subset the engine calls, with the checks the real
// runtime makes (and a few it cannot), on an emulated device that looks like an H100
// (sm_90, 132 SMs, 48 KB of shared memory per block by default, 227 KB with the opt-in).
//
// Device memory is host memory from posix_memalign (256-byte aligned like cudaMalloc),
// registered so that copies, memsets and kernel pointer arguments can be checked against it,
// and filled with 0xff bytes (a NaN per float) when allocated: a kernel that reads memory
// nobody wrote gets NaNs, as initcheck would report. What the emulation cannot see: host code
// dereferencing a device pointer (it is host memory here; compute-sanitizer on a GPU catches
// it), and anything that depends on real concurrency between blocks or streams (blocks run
// one at a time, every call is synchronous).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMemoryClockRate = 36,
  cudaDevAttrGlobalMemoryBusWidth = 37,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrReservedSharedMemoryPerBlock = 111,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,  // a hint: checked, then ignored
};
enum cudaSharedCarveout {  // or any percent in between
  cudaSharedmemCarveoutDefault = -1,
  cudaSharedmemCarveoutMaxL1 = 0,
  cudaSharedmemCarveoutMaxShared = 100,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
// Events: every call here runs to completion before it returns, so a recorded event has
// always completed (cudaEventQuery: cudaSuccess). What is checked is the handle (and, for
// cudaEventElapsedTime, timing flags and records; the time is the emulation's wall time).
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int warpSize;
  int maxThreadsPerBlock;
  int major, minor;
  int multiProcessorCount;
  int memoryBusWidth;  // bits
  int l2CacheSize;     // bytes
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <class... Params>
cudaError_t cudaFuncSetAttribute(void (*func)(Params...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}

// The driver API's entry points, as the runtime hands them out: here only
// cuTensorMapEncodeTiled (the emulation's, tensor_map.h); any other symbol is not found.
enum cudaDriverEntryPointQueryResult {
  cudaDriverEntryPointSuccess = 0,
  cudaDriverEntryPointSymbolNotFound = 1,
  cudaDriverEntryPointVersionNotSufficent = 2,
};
constexpr unsigned long long cudaEnableDefault = 0;
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** function,
                                             unsigned int cuda_version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* status = nullptr);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);

// Stream capture and graphs (cuda_emu::captured below has the rules emulated).
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st;
using cudaGraphExec_t = CUgraphExec_st*;
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t error);
// The generic text of the code; for the most recent error the emulation raised, that text
// followed by what exactly was wrong ("... (emulation: gemm_tiled: grid.y 70000 > 65535)").
const char* cudaGetErrorString(cudaError_t error);

namespace cuda_emu {

// The emulated device's limits.
constexpr int kSmCount = 132;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr size_t kOptinSharedBytes = 227 * 1024;  // an H100's; see optin_shared_bytes()
constexpr size_t kSharedBytesPerSm = 228 * 1024;  // an H100's (of its 256 KB of L1 and shared)
constexpr size_t kL1SharedBytesPerSm = 256 * 1024;
constexpr size_t kReservedSharedBytes = 1024;     // the system's, per block (sm_80 and later)
constexpr uint64_t kMaxThreadsPerSm = 2048;
constexpr uint64_t kMaxBlocksPerSm = 32;
constexpr size_t kGlobalBytes = size_t(16) << 30;

// The dynamic shared memory a block may opt in to: kOptinSharedBytes, or the bytes in
// DDPM_EMU_OPTIN_SHARED_BYTES, to play a smaller device (101376 is sm_86's and sm_89's 99 KB).
size_t optin_shared_bytes();
// The L1 a block of `kernel` launched as `spec` has (block.h: CopyReads), when the kernel
// stated a carveout (cudaFuncAttributePreferredSharedMemoryCarveout): the driver's split of
// an H100 SM's 256 KB, the next shared-memory capacity at or above the percent (and at least
// one block's), the rest L1, shared by the blocks the SM then holds by threads and shared
// memory (registers are not emulated: a kernel held to fewer by its registers gets more L1
// here than on a GPU). 0 without a carveout: the driver's choice, which the model does not
// know (l1_model_bytes() then).
size_t l1_bytes_per_block(const void* kernel, const GridSpec& spec);
// Every kernel's carveout taken as `percent` (as if each had set it), -2 to stop: a test's
// counterfactual (what a kernel's hits would be in another split).
void set_carveout_override(int percent);
// The SMs the device reports: kSmCount, or DDPM_EMU_SM_COUNT's, e.g. 1 so that the kernels
// which size their grids or split K by the SM count (the convolutions' split-K) run each
// block over the whole reduction (one-off counts such as docs/kernels.md's L1 table).
int sm_count();

// Sets the error cudaGetLastError returns next, with the detail cudaGetErrorString adds.
void set_last_error(cudaError_t error, const std::string& detail);
// True when [p, p + bytes) lies in one device allocation (or one cudaMallocHost block, which
// a real device can read too).
bool device_accessible(const void* p, size_t bytes);
// "" when the launch configuration is valid, otherwise why not (the runtime's rules).
std::string check_launch(const void* kernel, const GridSpec& spec);

// While one is alive, launches are checked but not run (to test the launch configuration
// of shapes too large to emulate).
class ScopedDryRun {
 public:
  ScopedDryRun();
  ~ScopedDryRun();
  ScopedDryRun(const ScopedDryRun&) = delete;
  ScopedDryRun& operator=(const ScopedDryRun&) = delete;
};
bool dry_run();

// Streams: work is synchronous here, so a stream changes nothing but is recorded. Every
// launch, asynchronous copy or memset, event record and cuBLAS product given the legacy
// default stream (nullptr), and every synchronous cudaMemcpy (which runs on it), is counted:
// the engine keeps all its work on a stream of its own (what CUDA graph capture needs), and
// tests pin that this count does not move.
void note_stream(cudaStream_t stream);
int64_t legacy_stream_calls();

// Stream capture (any mode): while a stream is captured, each launch, asynchronous copy,
// memset and event record queued on it is recorded, in order, instead of run, and a graph
// launch runs the recording again. Returns true when `work` was taken by a capture (recorded,
// or refused: work on another stream during a global capture is cudaErrorStreamCaptureImplicit
// and invalidates it, as on a GPU); false: run it now. A call that waits for the device
// (cudaMemcpy, cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize) during a
// capture is cudaErrorStreamCaptureUnsupported and invalidates it (refused_during_capture).
// Global and thread-local captures (one capturing thread here, so the two are the same) also
// refuse the "potentially unsafe" calls that relaxed mode allows: cudaMalloc and cudaFree
// (unsafe_during_capture).
bool captured(cudaStream_t stream, std::function<void()> work);
cudaError_t refused_during_capture(const char* call);
cudaError_t unsafe_during_capture(const char* call);

// Launch coverage: with DDPM_LAUNCH_SITES naming a folder, the first time a process runs a
// kernel from a launch site (DDPM_LAUNCH's file and line), a line is appended to
// <folder>/<pid>.txt: "file:line<TAB>executable<TAB>offset<TAB>name", the offset being the
// kernel's address in the executable (which symbol, so which template instantiation, nm
// says). scripts/launch_coverage.py holds every DDPM_LAUNCH in kernels/cuda and every kernel
// instantiation the emulated tests link to these records: one no test runs is named
// (tests/cuda_emulation/CMakeLists.txt, Emulated.LaunchCoverage).
void note_launch_site(const char* file, int line, const char* name, const void* kernel);

// run_grid, and with DDPM_EMU_PROFILE=1 the time it took added to the kernel's total, printed
// at exit (which kernels the emulation spends its time in).
std::string timed_run_grid(const GridSpec& spec, const std::function<void()>& body);

template <class T>
std::string check_pointer_argument(const char* kernel, size_t index, const T& value) {
  if constexpr (std::is_pointer_v<T>) {
    if (value != nullptr && !device_accessible(value, 1))
      return std::string(kernel) + ": argument " + std::to_string(index) +
             " is a pointer to memory the device cannot read (host memory?)";
  }
  return "";
}

// kernel<<<grid, block, smem, stream>>>(args...), launched at file:line: checks the
// configuration and the pointer arguments, then runs the grid. Like the real launch it
// returns nothing; errors surface in cudaGetLastError.
template <class... Params, class... Args>
void launch(const char* name, const char* file, int line, void (*kernel)(Params...), dim3 grid,
            dim3 block, size_t smem, cudaStream_t stream /*every call is synchronous here*/,
            Args&&... args) {
  note_stream(stream);
  GridSpec spec{grid, block, smem, name};
  spec.l1_bytes = l1_bytes_per_block(reinterpret_cast<const void*>(kernel), spec);
  if (in_kernel()) {
    set_last_error(cudaErrorNotSupported, std::string(name) + ": launched from a kernel");
    return;
  }
  const std::string config_error = check_launch(reinterpret_cast<const void*>(kernel), spec);
  if (!config_error.empty()) {
    set_last_error(config_error.find("shared memory") != std::string::npos
                       ? cudaErrorInvalidValue
                       : cudaErrorInvalidConfiguration,
                   config_error);
    return;
  }
  if (dry_run()) return;
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  std::string pointer_error;
  std::apply(
      [&](const auto&... p) {
        size_t index = 0;
        ((pointer_error += pointer_error.empty() ? check_pointer_argument(name, index, p) : "",
          ++index),
         ...);
      },
      params);
  if (!pointer_error.empty()) {
    set_last_error(cudaErrorIllegalAddress, pointer_error);
    return;
  }
  const auto run = [spec, kernel, params, file, line] {
    note_launch_site(file, line, spec.kernel, reinterpret_cast<const void*>(kernel));
    const std::string trap =
        timed_run_grid(spec, [&] { std::apply([&](const auto&... p) { kernel(p...); }, params); });
    if (!trap.empty()) set_last_error(cudaErrorLaunchFailure, trap);
  };
  if (!captured(stream, run)) run();
}

}  // namespace cuda_emu
