#include "engine/distributed/world.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "engine/check.h"
#include "engine/distributed/backends.h"

#if defined(DDPM_WITH_MPI)
#include <mpi.h>
#endif
#if defined(DDPM_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace ddpm {
namespace {

std::unique_ptr<Collective> g_world;

int env_int(const char* a, const char* b, int fallback) {
  for (const char* name : {a, b})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return fallback;
}

// This node's share of the cores and GPUs (OpenMPI's and PMI's variable names).
void take_local_share(Device device) {
  const int local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", 0);
  const int local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", 1);
  if (!std::getenv("OMP_NUM_THREADS") && local_size > 1)
    omp_set_num_threads(std::max(1, omp_get_num_procs() / local_size));
#if defined(DDPM_WITH_CUDA)
  if (device == Device::CUDA) {
    int count = 0;
    CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count > 0,
          "rank with local rank " << local_rank << ": no CUDA device");
    CHECK(cudaSetDevice(local_rank % count) == cudaSuccess,
          "cudaSetDevice(" << local_rank % count << ") failed");
  }
#else
  (void)device;
  (void)local_rank;
#endif
}

}  // namespace

bool built_with_mpi() {
#if defined(DDPM_WITH_MPI)
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#if defined(DDPM_WITH_NCCL)
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

Collective& open_world(Device device) {
  if (g_world) return *g_world;
  if (!launched_by_mpi()) {
    g_world = std::make_unique<SingleProcess>();
    return *g_world;
  }
  CHECK(built_with_mpi(), "started by mpirun, but this build has no MPI (install libopenmpi-dev "
                          "and openmpi-bin, scripts/setup.sh does, then rebuild)");
  take_local_share(device);
#if defined(DDPM_WITH_MPI)
  std::unique_ptr<Collective> mpi = distributed::make_mpi_world();
#if defined(DDPM_WITH_NCCL)
  if (device == Device::CUDA) mpi = distributed::make_nccl_world(std::move(mpi));
#endif
  g_world = std::move(mpi);
#endif
  return *g_world;
}

Collective* current_world() { return g_world.get(); }

void abort_world(int code) {
#if defined(DDPM_WITH_MPI)
  int initialised = 0, finalised = 0, size = 1;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

}  // namespace ddpm
