// The emulated CUDA runtime API (runtime.h): device memory as registered host memory, the
// device's attributes, the sticky-free "last error" of the real runtime, and the launch
// configuration rules.
#include "tests/cuda_emulation/runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include <dlfcn.h>   // dladdr
#include <unistd.h>  // getpid, readlink

#include "tests/cuda_emulation/tensor_map.h"

namespace cuda_emu {
namespace {

struct Allocation {
  size_t bytes;
  bool pinned_host;  // cudaMallocHost: host memory the device can also read
};

class Registry {
 public:
  static Registry& instance() {
    static Registry* r = new Registry();  // never destroyed: frees may come during exit
    return *r;
  }
  void add(void* p, size_t bytes, bool pinned) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, pinned};
    if (!pinned) device_bytes_ += bytes;
  }
  // Removes the block starting at p; false when p starts no block of that kind.
  bool remove(void* p, bool pinned) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(reinterpret_cast<uintptr_t>(p));
    if (it == blocks_.end() || it->second.pinned_host != pinned) return false;
    if (!pinned) device_bytes_ -= it->second.bytes;
    blocks_.erase(it);
    return true;
  }
  // The block holding [p, p + bytes), if any: 0 = none, 1 = device, 2 = pinned host.
  int find(const void* p, size_t bytes) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.upper_bound(a);
    if (it == blocks_.begin()) return 0;
    --it;
    if (a + bytes > it->first + std::max<size_t>(it->second.bytes, 1)) return 0;
    return it->second.pinned_host ? 2 : 1;
  }
  size_t device_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return device_bytes_;
  }

 private:
  mutable std::mutex mu_;
  std::map<uintptr_t, Allocation> blocks_;
  size_t device_bytes_ = 0;
};

struct LastError {
  cudaError_t code = cudaSuccess;
  std::string detail;  // of the most recent error raised here
  cudaError_t detail_code = cudaSuccess;
  std::string text;  // storage for cudaGetErrorString
};
thread_local LastError t_last;

std::mutex g_attr_mutex;
std::map<const void*, int> g_dynamic_smem_optin;  // kernel -> opted-in bytes
std::map<const void*, int> g_carveout;            // kernel -> preferred carveout, percent
int g_carveout_override = -2;                     // set_carveout_override; -2: none

std::atomic<int> g_dry_runs{0};

cudaError_t fail(cudaError_t code, const std::string& detail) {
  set_last_error(code, detail);
  return code;
}

bool is_device(const void* p, size_t bytes) {
  return Registry::instance().find(p, bytes) == 1;
}

}  // namespace

namespace {

// The whole number in the environment variable `name`, `otherwise` when it is unset or
// empty; anything but a number from `low` to `high` stops the process, naming what it wants.
size_t env_number(const char* name, size_t otherwise, size_t low, size_t high,
                  const char* unit) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return otherwise;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(env, &end, 10);
  if (*end != '\0' || value < low || value > high) {
    std::fprintf(stderr, "%s=%s: want %s from %zu to %zu\n", name, env, unit, low, high);
    std::abort();
  }
  return static_cast<size_t>(value);
}

}  // namespace

size_t optin_shared_bytes() {
  static const size_t bytes = env_number("DDPM_EMU_OPTIN_SHARED_BYTES", kOptinSharedBytes,
                                         kDefaultSharedBytes, kOptinSharedBytes, "bytes");
  return bytes;
}

size_t l1_bytes_per_block(const void* kernel, const GridSpec& spec) {
  int percent = -1;
  {
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    const auto it = g_carveout.find(kernel);
    if (it != g_carveout.end()) percent = it->second;
    if (g_carveout_override != -2) percent = g_carveout_override;
  }
  if (percent < 0) return 0;  // the driver's choice: the process-wide model
  // An H100's shared-memory capacities (KB): the next at or above the percent, and at least
  // one block's (the driver raises the split for a kernel that would not run otherwise).
  const size_t block = spec.dynamic_smem + kReservedSharedBytes;
  size_t capacity = kSharedBytesPerSm;
  for (int kb : {0, 8, 16, 32, 64, 100, 132, 164, 196, 228}) {
    const size_t bytes = size_t(kb) * 1024;
    if (bytes * 100 >= size_t(percent) * kSharedBytesPerSm && bytes >= block) {
      capacity = bytes;
      break;
    }
  }
  const uint64_t threads = uint64_t(spec.block.x) * spec.block.y * spec.block.z;
  const uint64_t resident = std::max<uint64_t>(
      1, std::min<uint64_t>({kMaxThreadsPerSm / threads, capacity / block, kMaxBlocksPerSm}));
  return (kL1SharedBytesPerSm - capacity) / resident;
}

void set_carveout_override(int percent) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  g_carveout_override = percent;
}

int sm_count() {
  static const int count =
      static_cast<int>(env_number("DDPM_EMU_SM_COUNT", kSmCount, 1, 1024, "SMs"));
  return count;
}

void set_last_error(cudaError_t error, const std::string& detail) {
  t_last.code = error;
  t_last.detail = detail;
  t_last.detail_code = error;
}

bool device_accessible(const void* p, size_t bytes) {
  return Registry::instance().find(p, bytes) != 0;
}

std::string check_launch(const void* kernel, const GridSpec& s) {
  const std::string k = s.kernel;
  const uint64_t threads = uint64_t(s.block.x) * s.block.y * s.block.z;
  if (threads == 0 || s.grid.x == 0 || s.grid.y == 0 || s.grid.z == 0)
    return k + ": a grid or block dimension is 0";
  if (threads > kMaxThreadsPerBlock || s.block.x > 1024 || s.block.y > 1024 || s.block.z > 64)
    return k + ": block (" + std::to_string(s.block.x) + "," + std::to_string(s.block.y) + "," +
           std::to_string(s.block.z) + ") = " + std::to_string(threads) +
           " threads exceeds the device's 1024 per block (z at most 64)";
  if (s.grid.x > 2147483647u) return k + ": grid.x " + std::to_string(s.grid.x) + " > 2^31 - 1";
  if (s.grid.y > 65535) return k + ": grid.y " + std::to_string(s.grid.y) + " > 65535";
  if (s.grid.z > 65535) return k + ": grid.z " + std::to_string(s.grid.z) + " > 65535";
  if (s.dynamic_smem > optin_shared_bytes())
    return k + ": " + std::to_string(s.dynamic_smem) +
           " bytes of dynamic shared memory exceed "
           "the device's " +
           std::to_string(optin_shared_bytes());
  if (s.dynamic_smem > kDefaultSharedBytes) {
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    auto it = g_dynamic_smem_optin.find(kernel);
    const int optin = it == g_dynamic_smem_optin.end() ? 0 : it->second;
    if (s.dynamic_smem > static_cast<size_t>(optin))
      return k + ": " + std::to_string(s.dynamic_smem) +
             " bytes of dynamic shared memory need "
             "cudaFuncAttributeMaxDynamicSharedMemorySize (set: " +
             std::to_string(optin) + ")";
  }
  return "";
}

namespace {

struct Profile {
  std::mutex mu;
  std::map<std::string, std::pair<double, uint64_t>> seconds_and_launches;
  ~Profile() {
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto& [name, v] : seconds_and_launches) {
      rows.emplace_back(v.first, name + " (" + std::to_string(v.second) + " launches)");
      total += v.first;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "cuda emulation profile: %.2f s in kernels\n", total);
    for (size_t i = 0; i < rows.size() && i < 25; ++i)
      std::fprintf(stderr, "  %8.3f s  %s\n", rows[i].first, rows[i].second.c_str());
  }
};

Profile* profile() {
  static Profile* p = [] {
    const char* env = std::getenv("DDPM_EMU_PROFILE");
    return env != nullptr && std::strcmp(env, "1") == 0 ? new Profile() : nullptr;
  }();
  return p;
}

struct PrintProfileAtExit {
  ~PrintProfileAtExit() { delete profile(); }
} g_print_profile_at_exit;

}  // namespace

void note_launch_site(const char* file, int line, const char* name, const void* kernel) {
  static const char* const folder = std::getenv("DDPM_LAUNCH_SITES");
  if (folder == nullptr || *folder == '\0') return;
  static std::mutex mu;
  static std::set<std::tuple<const void*, const char*, int>> seen;  // a kernel from a line
  std::lock_guard<std::mutex> lock(mu);
  if (!seen.insert({kernel, file, line}).second) return;
  static const std::string executable = [] {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    return n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string("-");
  }();
  // The kernel's address less the load address of the executable holding it: for a
  // position-independent executable (the default), the address nm lists it at.
  Dl_info where{};
  const uintptr_t base =
      dladdr(kernel, &where) != 0 ? reinterpret_cast<uintptr_t>(where.dli_fbase) : 0;
  const std::string path = std::string(folder) + "/" + std::to_string(getpid()) + ".txt";
  FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) {
    std::fprintf(stderr, "cuda emulation: cannot append to %s (DDPM_LAUNCH_SITES)\n",
                 path.c_str());
    std::abort();
  }
  std::fprintf(f, "%s:%d\t%s\t%zx\t%s\n", file, line, executable.c_str(),
               static_cast<size_t>(reinterpret_cast<uintptr_t>(kernel) - base), name);
  std::fclose(f);
}

std::string timed_run_grid(const GridSpec& spec, const std::function<void()>& body) {
  Profile* p = profile();
  if (p == nullptr) return run_grid(spec, body);
  const auto start = std::chrono::steady_clock::now();
  std::string result = run_grid(spec, body);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(p->mu);
  auto& entry = p->seconds_and_launches[spec.kernel];
  entry.first += s;
  ++entry.second;
  return result;
}

ScopedDryRun::ScopedDryRun() {
  ++g_dry_runs;
}
ScopedDryRun::~ScopedDryRun() {
  --g_dry_runs;
}
bool dry_run() {
  return g_dry_runs.load() > 0;
}

}  // namespace cuda_emu

using cuda_emu::fail;

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "only device 0 is emulated");
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "only device 0 is emulated");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "CUDA emulated on the CPU (tests/cuda_emulation)");
  prop->totalGlobalMem = cuda_emu::kGlobalBytes;
  prop->sharedMemPerBlock = cuda_emu::kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = cuda_emu::optin_shared_bytes();
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = cuda_emu::kMaxThreadsPerBlock;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = cuda_emu::sm_count();
  prop->memoryBusWidth = 5120;        // an H100 SXM's, as the attributes below
  prop->l2CacheSize = 50 * 1024 * 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "only device 0 is emulated");
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = cuda_emu::kMaxThreadsPerBlock;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = int(cuda_emu::kDefaultSharedBytes);
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = int(cuda_emu::optin_shared_bytes());
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = int(cuda_emu::kSharedBytesPerSm);
      break;
    case cudaDevAttrReservedSharedMemoryPerBlock:
      *value = int(cuda_emu::kReservedSharedBytes);
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = cuda_emu::sm_count();
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrClockRate:
      *value = 1980000;
      break;  // kHz, an H100 SXM's boost
    case cudaDevAttrMemoryClockRate:
      *value = 2619000;
      break;  // kHz
    case cudaDevAttrGlobalMemoryBusWidth:
      *value = 5120;
      break;  // bits
    default:
      return fail(cudaErrorInvalidValue, "attribute not emulated");
  }
  return cudaSuccess;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** function,
                                             unsigned int cuda_version, unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  if (symbol == nullptr || function == nullptr) return cudaErrorInvalidValue;
  const bool tiled = std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0;
  const bool im2col = std::strcmp(symbol, "cuTensorMapEncodeIm2col") == 0;
  const bool found = tiled || im2col;
  const bool recent = cuda_version >= 12000;  // both functions appeared in CUDA 12.0
  *function = !found || !recent ? nullptr
              : tiled           ? reinterpret_cast<void*>(&cuda_emu::tensor_map_encode_tiled)
                                : reinterpret_cast<void*>(&cuda_emu::tensor_map_encode_im2col);
  if (status != nullptr)
    *status = !found    ? cudaDriverEntryPointSymbolNotFound
              : !recent ? cudaDriverEntryPointVersionNotSufficent
                        : cudaDriverEntryPointSuccess;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {  // the L1 model's size
    if (value < -1 || value > 100)
      return fail(cudaErrorInvalidValue, "cudaFuncAttributePreferredSharedMemoryCarveout " +
                                             std::to_string(value) +
                                             " is not a percent (0-100) or -1");
    std::lock_guard<std::mutex> lock(cuda_emu::g_attr_mutex);
    cuda_emu::g_carveout[func] = value;
    return cudaSuccess;
  }
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return fail(cudaErrorInvalidValue, "function attribute not emulated");
  if (value < 0 || static_cast<size_t>(value) > cuda_emu::optin_shared_bytes())
    return fail(cudaErrorInvalidValue, "cudaFuncAttributeMaxDynamicSharedMemorySize " +
                                           std::to_string(value) + " exceeds the device's " +
                                           std::to_string(cuda_emu::optin_shared_bytes()));
  std::lock_guard<std::mutex> lock(cuda_emu::g_attr_mutex);
  cuda_emu::g_dynamic_smem_optin[func] = value;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = nullptr;
  if (const cudaError_t e = cuda_emu::unsafe_during_capture("cudaMalloc")) return e;
  if (bytes == 0) return cudaSuccess;
  if (cuda_emu::Registry::instance().device_bytes() + bytes > cuda_emu::kGlobalBytes)
    return fail(cudaErrorMemoryAllocation,
                "the emulated device has " + std::to_string(cuda_emu::kGlobalBytes) + " bytes");
  if (posix_memalign(ptr, 256, bytes) != 0) {
    *ptr = nullptr;
    return fail(cudaErrorMemoryAllocation, "host memory for the emulated device ran out");
  }
  std::memset(*ptr, 0xff, bytes);  // uninitialised device memory reads as NaN
  cuda_emu::Registry::instance().add(*ptr, bytes, false);
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (const cudaError_t e = cuda_emu::unsafe_during_capture("cudaFree")) return e;
  if (ptr == nullptr) return cudaSuccess;
  if (!cuda_emu::Registry::instance().remove(ptr, false))
    return fail(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  if (posix_memalign(ptr, 256, bytes == 0 ? 1 : bytes) != 0) {
    *ptr = nullptr;
    return fail(cudaErrorMemoryAllocation, "cudaMallocHost ran out of host memory");
  }
  cuda_emu::Registry::instance().add(*ptr, bytes, true);
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (!cuda_emu::Registry::instance().remove(ptr, true))
    return fail(cudaErrorInvalidValue, "cudaFreeHost of a pointer cudaMallocHost did not return");
  std::free(ptr);
  return cudaSuccess;
}

namespace cuda_emu {
namespace {

// The copy and the fill, on whichever stream the caller named.
cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = cuda_emu::is_device(dst, bytes), src_dev = cuda_emu::is_device(src, bytes);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToHost:
      ok = !dst_dev && !src_dev;
      break;
    case cudaMemcpyHostToDevice:
      ok = dst_dev && !src_dev;
      break;
    case cudaMemcpyDeviceToHost:
      ok = !dst_dev && src_dev;
      break;
    case cudaMemcpyDeviceToDevice:
      ok = dst_dev && src_dev;
      break;
    case cudaMemcpyDefault:
      break;
  }
  if (!ok)
    return fail(cudaErrorInvalidValue,
                "cudaMemcpy of " + std::to_string(bytes) + " bytes: the ranges do not match kind " +
                    std::to_string(int(kind)) + " (destination " + (dst_dev ? "in" : "not in") +
                    " one device allocation, source " + (src_dev ? "in" : "not in") + ")");
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t set(void* ptr, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!is_device(ptr, bytes))
    return fail(cudaErrorInvalidValue,
                "cudaMemset of " + std::to_string(bytes) + " bytes outside any device allocation");
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

}  // namespace
}  // namespace cuda_emu

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  cuda_emu::note_stream(nullptr);  // synchronous: on the legacy default stream
  if (const cudaError_t e = cuda_emu::refused_during_capture("cudaMemcpy")) return e;
  return cuda_emu::copy(dst, src, bytes, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  cuda_emu::note_stream(stream);
  if (cuda_emu::captured(stream, [=] { (void)cuda_emu::copy(dst, src, bytes, kind); }))
    return cudaSuccess;
  return cuda_emu::copy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  cuda_emu::note_stream(nullptr);
  return cuda_emu::set(ptr, value, bytes);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  cuda_emu::note_stream(stream);
  if (cuda_emu::captured(stream, [=] { (void)cuda_emu::set(ptr, value, bytes); }))
    return cudaSuccess;
  return cuda_emu::set(ptr, value, bytes);
}

cudaError_t cudaDeviceSynchronize() {
  return cuda_emu::refused_during_capture("cudaDeviceSynchronize");
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cuda_emu::refused_during_capture("cudaStreamSynchronize");
}

// ---- stream capture and graphs ----
struct CUgraph_st {
  std::vector<std::function<void()>> nodes;  // in the order they were captured
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};

namespace cuda_emu {
namespace {
struct Capture {
  cudaStream_t stream = nullptr;
  bool active = false, invalidated = false;
  std::vector<std::function<void()>> nodes;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
};
std::mutex g_capture_mutex;
Capture g_capture;  // one capture at a time (the engine has one stream)
}  // namespace

bool captured(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  if (!g_capture.active) return false;
  if (stream != g_capture.stream) {
    g_capture.invalidated = true;
    set_last_error(cudaErrorStreamCaptureImplicit,
                   "work on another stream (or the legacy one) during a global stream capture");
    return true;
  }
  g_capture.nodes.push_back(std::move(work));
  return true;
}

cudaError_t refused_during_capture(const char* call) {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  if (!g_capture.active) return cudaSuccess;
  g_capture.invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(call) + " waits for the device: not allowed while a stream is captured");
}

cudaError_t unsafe_during_capture(const char* call) {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  if (!g_capture.active || g_capture.mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
  g_capture.invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(call) + " is not allowed during a global or thread-local capture");
}
}  // namespace cuda_emu

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_capture_mutex);
  if (stream == nullptr)
    return cuda_emu::fail(cudaErrorStreamCaptureUnsupported,
                          "cudaStreamBeginCapture on the legacy default stream");
  if (cuda_emu::g_capture.active)
    return cuda_emu::fail(cudaErrorInvalidValue, "a capture is already under way");
  cuda_emu::g_capture = cuda_emu::Capture{stream, true, false, {}, mode};
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_capture_mutex);
  *graph = nullptr;
  if (!cuda_emu::g_capture.active || stream != cuda_emu::g_capture.stream)
    return cuda_emu::fail(cudaErrorInvalidValue, "cudaStreamEndCapture of a stream not captured");
  cuda_emu::Capture done = std::move(cuda_emu::g_capture);
  cuda_emu::g_capture = cuda_emu::Capture{};
  if (done.invalidated)
    return cuda_emu::fail(cudaErrorStreamCaptureInvalidated,
                          "the capture was invalidated by a call not allowed during it");
  *graph = new CUgraph_st{std::move(done.nodes)};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_capture_mutex);
  const cuda_emu::Capture& c = cuda_emu::g_capture;
  *status = !c.active || c.stream != stream ? cudaStreamCaptureStatusNone
            : c.invalidated                 ? cudaStreamCaptureStatusInvalidated
                                            : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return cuda_emu::fail(cudaErrorInvalidValue, "cudaGraphInstantiate of no graph");
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return cuda_emu::fail(cudaErrorInvalidValue, "cudaGraphLaunch of no graph");
  cuda_emu::note_stream(stream);
  const auto replay = [exec] {
    for (const auto& node : exec->nodes) node();
  };
  if (!cuda_emu::captured(stream, replay)) replay();
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = reinterpret_cast<cudaStream_t>(new char);  // a unique address; never dereferenced
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete reinterpret_cast<char*>(stream);
  return cudaSuccess;
}

namespace cuda_emu {
namespace {
std::atomic<int64_t> g_legacy_stream_calls{0};
}  // namespace
void note_stream(cudaStream_t stream) {
  if (stream == nullptr) ++g_legacy_stream_calls;
}
int64_t legacy_stream_calls() { return g_legacy_stream_calls.load(); }
}  // namespace cuda_emu

// An event is a live handle with its flags and the time it was last recorded: kernels run
// when they are launched here, so an event "completes" when it is recorded, and the time
// between two records is the emulated work between them (cudaEventElapsedTime).
namespace cuda_emu {
namespace {
struct EventState {
  unsigned flags = 0;
  double recorded_ms = -1;  // steady-clock milliseconds of the last record, -1: never
};
std::mutex g_event_mutex;
std::map<const CUevent_st*, EventState>& live_events() {
  static auto* events = new std::map<const CUevent_st*, EventState>();  // never destroyed
  return *events;
}
bool event_is_live(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(g_event_mutex);
  return live_events().count(e) != 0;
}
cudaError_t bad_event(const char* call) {
  return fail(cudaErrorInvalidResourceHandle,
              std::string(call) + " of an event cudaEventCreate did not return (or destroyed)");
}
}  // namespace
}  // namespace cuda_emu

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = reinterpret_cast<cudaEvent_t>(new char);  // a unique address; never dereferenced
  std::lock_guard<std::mutex> lock(cuda_emu::g_event_mutex);
  cuda_emu::live_events()[*event] = cuda_emu::EventState{flags, -1};
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  {
    std::lock_guard<std::mutex> lock(cuda_emu::g_event_mutex);
    if (cuda_emu::live_events().erase(event) == 0) return cuda_emu::bad_event("cudaEventDestroy");
  }
  delete reinterpret_cast<char*>(event);
  return cudaSuccess;
}
namespace cuda_emu {
namespace {
cudaError_t record_event(cudaEvent_t event) {
  const double now = std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
  std::lock_guard<std::mutex> lock(g_event_mutex);
  auto it = live_events().find(event);
  if (it == live_events().end()) return bad_event("cudaEventRecord");
  it->second.recorded_ms = now;
  return cudaSuccess;
}
}  // namespace
}  // namespace cuda_emu

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  cuda_emu::note_stream(stream);
  if (!cuda_emu::event_is_live(event)) return cuda_emu::bad_event("cudaEventRecord");
  if (cuda_emu::captured(stream, [event] { (void)cuda_emu::record_event(event); }))
    return cudaSuccess;
  return cuda_emu::record_event(event);
}
// The real rules: both events live, created with timing, and recorded.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_event_mutex);
  const auto& events = cuda_emu::live_events();
  const auto a = events.find(start), b = events.find(end);
  if (a == events.end() || b == events.end()) return cuda_emu::bad_event("cudaEventElapsedTime");
  if ((a->second.flags & cudaEventDisableTiming) || (b->second.flags & cudaEventDisableTiming))
    return cuda_emu::fail(cudaErrorInvalidResourceHandle,
                          "cudaEventElapsedTime of an event created with cudaEventDisableTiming");
  if (a->second.recorded_ms < 0 || b->second.recorded_ms < 0)
    return cuda_emu::fail(cudaErrorInvalidResourceHandle,
                          "cudaEventElapsedTime of an event never recorded");
  *ms = static_cast<float>(b->second.recorded_ms - a->second.recorded_ms);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  return cuda_emu::event_is_live(event) ? cudaSuccess : cuda_emu::bad_event("cudaEventQuery");
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (const cudaError_t e = cuda_emu::refused_during_capture("cudaEventSynchronize")) return e;
  return cuda_emu::event_is_live(event) ? cudaSuccess
                                        : cuda_emu::bad_event("cudaEventSynchronize");
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_emu::t_last.code;
  cuda_emu::t_last.code = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  return cuda_emu::t_last.code;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  const char* generic = "unknown error";
  switch (error) {
    case cudaSuccess:
      generic = "no error";
      break;
    case cudaErrorInvalidValue:
      generic = "invalid argument";
      break;
    case cudaErrorMemoryAllocation:
      generic = "out of memory";
      break;
    case cudaErrorInvalidConfiguration:
      generic = "invalid configuration argument";
      break;
    case cudaErrorInvalidDevicePointer:
      generic = "invalid device pointer";
      break;
    case cudaErrorInvalidMemcpyDirection:
      generic = "invalid copy direction for memcpy";
      break;
    case cudaErrorInvalidDevice:
      generic = "invalid device ordinal";
      break;
    case cudaErrorIllegalAddress:
      generic = "an illegal memory access was encountered";
      break;
    case cudaErrorLaunchOutOfResources:
      generic = "too many resources requested for launch";
      break;
    case cudaErrorLaunchFailure:
      generic = "unspecified launch failure";
      break;
    case cudaErrorNotSupported:
      generic = "operation not supported";
      break;
    case cudaErrorInvalidResourceHandle:
      generic = "invalid resource handle";
      break;
    case cudaErrorNotReady:
      generic = "device not ready";
      break;
    case cudaErrorStreamCaptureUnsupported:
      generic = "operation not permitted when stream is capturing";
      break;
    case cudaErrorStreamCaptureInvalidated:
      generic = "operation failed due to a previous error during capture";
      break;
    case cudaErrorStreamCaptureImplicit:
      generic = "operation would make the legacy stream depend on a capturing blocking stream";
      break;
  }
  cuda_emu::LastError& last = cuda_emu::t_last;
  if (error == cudaSuccess || error != last.detail_code) return generic;
  last.text = std::string(generic) + " (emulation: " + last.detail + ")";
  return last.text.c_str();
}
