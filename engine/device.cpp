#include "engine/device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <unistd.h>

#include "engine/check.h"
#include "engine/cuda_graph.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_allocator.h"
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "engine/host_staging.h"
#include <nvtx3/nvToolsExt.h>
#endif

namespace ddpm {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

namespace {

std::atomic<uint64_t> g_launches{0}, g_memsets{0}, g_copies{0}, g_host_syncs{0}, g_late_reads{0},
    g_graph_launches{0};

// Host blocks are 64-byte aligned: a cache line, and enough for any SIMD load.
constexpr size_t kHostAlignment = 64;

#if DDPM_WITH_CUDA
struct CudaProbe {
  bool ok = false;
  std::string reason;
  std::string description;
  size_t memory = 0;
};

const CudaProbe& probe() {
  static const CudaProbe result = [] {
    CudaProbe p;
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      p.reason = std::string("no CUDA device: ") + cudaGetErrorString(status);
      return p;
    }
    if (count == 0) {
      p.reason = "no CUDA device: cudaGetDeviceCount returned 0";
      return p;
    }
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::ostringstream os;
    os << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount
       << " SMs, " << static_cast<double>(prop.totalGlobalMem) / (1 << 30) << " GiB)";
    p.ok = true;
    p.description = os.str();
    p.memory = prop.totalGlobalMem;
    return p;
  }();
  return result;
}
#endif

void require_cuda(const char* what) {
  CHECK(cuda_available(), what << " needs a CUDA device: " << cuda_unavailable_reason());
}

}  // namespace

bool cuda_available() {
#if DDPM_WITH_CUDA
  return probe().ok;
#else
  return false;
#endif
}

std::string cuda_unavailable_reason() {
#if DDPM_WITH_CUDA
  return probe().ok ? std::string() : probe().reason;
#else
  return "built without CUDA (nvcc was not found at configure time)";
#endif
}

std::string cuda_device_description() {
#if DDPM_WITH_CUDA
  return probe().ok ? probe().description : probe().reason;
#else
  return cuda_unavailable_reason();
#endif
}

size_t device_memory_bytes(Device d) {
  if (d == Device::CPU) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  }
#if DDPM_WITH_CUDA
  return probe().ok ? probe().memory : 0;
#else
  return 0;
#endif
}

namespace {

// -1: not decided yet (the environment is read on first use), 0 off, 1 on.
std::atomic<int> g_poison{-1};

bool poison_from_environment() {
  const char* v = std::getenv("DDPM_POISON_MEMORY");
  if (v == nullptr || std::strcmp(v, "0") == 0 || *v == '\0') return false;
  CHECK(std::strcmp(v, "1") == 0,
        "DDPM_POISON_MEMORY must be 1 (fill new memory with NaN bytes) or 0, got '" << v << "'");
  return true;
}

}  // namespace

bool poison_new_memory() {
  int on = g_poison.load();
  if (on < 0) {
    on = poison_from_environment() ? 1 : 0;
    g_poison.store(on);
  }
  return on == 1;
}

void set_poison_new_memory(bool on) { g_poison.store(on ? 1 : 0); }

void* device_alloc(Device d, size_t bytes) {
  constexpr int kPoisonByte = 0xff;  // 0xffffffff and 0xffff: NaN in f32 and in bf16
  if (d == Device::CPU) {
    const size_t size = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    void* p = std::aligned_alloc(kHostAlignment, size == 0 ? kHostAlignment : size);
    CHECK(p != nullptr, "host allocation of " << bytes << " bytes failed");
    if (poison_new_memory()) std::memset(p, kPoisonByte, bytes);
    return p;
  }
  require_cuda("allocating a CUDA tensor");
#if DDPM_WITH_CUDA
  void* p = CudaCachingAllocator::instance().allocate(bytes);
  if (poison_new_memory() && bytes > 0)
    CUDA_CHECK(cudaMemsetAsync(p, kPoisonByte, bytes, engine_stream()));
  return p;
#else
  return nullptr;
#endif
}

void device_free(Device d, void* ptr, size_t /*bytes*/) {
  if (d == Device::CPU) {
    std::free(ptr);
    return;
  }
#if DDPM_WITH_CUDA
  CudaCachingAllocator::instance().release(ptr);
#endif
}

void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  require_cuda("a copy to or from a CUDA tensor");
#if DDPM_WITH_CUDA
  CHECK((dst_dev != Device::CPU && src_dev != Device::CPU) || !engine_stream_capturing(),
        "a copy " << (src_dev == Device::CPU ? "from" : "to") << " the host of " << bytes
                  << " bytes inside a captured CUDA graph: a graph would replay it with the "
                  << "same host bytes; upload the data into a fixed buffer before launching it");
  ++g_copies;
  if (src_dev == Device::CPU) {  // up: staged through pinned memory, queued (host_staging.h)
    if (upload_staged(dst, src, bytes) != Upload::Queued) ++g_host_syncs;
    return;
  }
  // On the engine's stream, after the work queued before it; a copy to the host then waits
  // for it to land (the host waits for the GPU).
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, engine_stream()));
  if (dst_dev == Device::CPU) {
    CUDA_CHECK(cudaStreamSynchronize(engine_stream()));
    ++g_host_syncs;
  }
#endif
}

void device_zero(void* ptr, Device d, size_t bytes) {
  if (bytes == 0) return;
  if (d == Device::CPU) {
    std::memset(ptr, 0, bytes);
    return;
  }
#if DDPM_WITH_CUDA
  CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, engine_stream()));
  ++g_memsets;
#endif
}

void count_kernel_launch() { ++g_launches; }

#if DDPM_WITH_CUDA
cudaStream_t engine_stream() {
  static const cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreate(&s));  // blocking: ordered with the legacy stream too
    return s;
  }();
  return stream;
}
#endif
void count_late_read() { ++g_late_reads; }
void count_graph_launch() { ++g_graph_launches; }
void count_host_sync() { ++g_host_syncs; }

DeviceWorkCounts device_work_counts() {
  return {g_launches.load(),   g_memsets.load(),    g_copies.load(),
          g_host_syncs.load(), g_late_reads.load(), g_graph_launches.load()};
}

ProfileRange::ProfileRange(const char* name) {
#if DDPM_WITH_CUDA
  nvtxRangePushA(name);
#else
  (void)name;
#endif
}

ProfileRange::~ProfileRange() {
#if DDPM_WITH_CUDA
  nvtxRangePop();
#endif
}

void cuda_reset_peak_bytes_in_use() {
#if DDPM_WITH_CUDA
  CudaCachingAllocator::instance().reset_peak();
#endif
}

size_t cuda_peak_bytes_in_use() {
#if DDPM_WITH_CUDA
  return CudaCachingAllocator::instance().stats().peak_bytes_in_use;
#else
  return 0;
#endif
}

void device_synchronize(Device d) {
  if (d == Device::CPU) return;
#if DDPM_WITH_CUDA
  CUDA_CHECK(cudaDeviceSynchronize());
  ++g_host_syncs;
#endif
}

}  // namespace ddpm
