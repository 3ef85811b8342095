// The MPI and NCCL worlds behind open_world() (engine/distributed/world.h); each is compiled
// only when its library is found (DDPM_WITH_MPI, DDPM_WITH_NCCL).
#pragma once

#include <memory>

#include "engine/collective.h"

namespace ddpm::distributed {

// MPI_COMM_WORLD, initialised here (finalised at exit). Gradients: the chain in rank order
// (engine/collective.h); CUDA tensors are staged through the host.
std::unique_ptr<Collective> make_mpi_world();
// GPU gradients all-reduced with NCCL over the ranks of `host` (which shares NCCL's unique
// id and does every host-side exchange). Not order-preserving across ranks; with one rank it
// is the local fold.
std::unique_ptr<Collective> make_nccl_world(std::unique_ptr<Collective> host);

}  // namespace ddpm::distributed
