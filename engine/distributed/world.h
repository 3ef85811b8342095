// Opening the world of a data-parallel run (engine/collective.h says what the ranks share).
//
//   mpirun -np W build/apps/ddpm train ...    W ranks: MPI (OpenMPI) for the CPU's gradients
//                                             and every host-side exchange; NCCL for the
//                                             GPU's gradients, its unique id shared over MPI
//   build/apps/ddpm train ...                 the world of one (SingleProcess), no MPI at all
//
// Under mpirun each rank takes its share of the machine: GPU local_rank % device count, and
// (unless OMP_NUM_THREADS is set) cores / ranks-on-this-node OpenMP threads, so 2 ranks on 2
// cores do not spin against each other (docs/cpu-path.md measured what that costs).
// MPI's errors stay fatal (MPI_ERRORS_ARE_FATAL): a rank that dies takes the job down, and a
// rank that fails a check calls abort_world() after printing its message, so no rank waits
// forever in a collective.
#pragma once

#include <memory>

#include "engine/collective.h"
#include "engine/device.h"

namespace ddpm {

// True when this process was started by mpirun / an MPI launcher (its environment says so).
bool launched_by_mpi();
// The world for gradients on `device`: MPI or NCCL under an MPI launcher (an error if this
// build has no MPI), SingleProcess otherwise. Opened once; later calls return the same world.
Collective& open_world(Device device);
// The open world, or nullptr before open_world().
Collective* current_world();
// Ends every rank of an MPI job (MPI_Abort with `code`) when more than one runs; otherwise
// returns and the caller exits as usual.
void abort_world(int code);
// Whether this build can open an MPI world / reduce GPU gradients with NCCL.
bool built_with_mpi();
bool built_with_nccl();

}  // namespace ddpm
