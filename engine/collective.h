// How the ranks of a data-parallel run talk: the few collectives a training step needs.
//
//   rank r of W processes (mpirun -np W), each computing the gradients of its shards of the
//   global batch; then
//     sum_in_rank_order   the gradient sum over all shards, on every rank
//     all_gather          each rank's per-sample losses, concatenated in rank order
//     all_gather_text     agreement checks (the resolved configs) before step 1
//     broadcast_text      rank 0's decision (which checkpoint to resume) to all
//
// sum_in_rank_order is a left fold over the shards in global order,
//   ((s_0 + s_1) + s_2) + ... + s_{M-1},
// whichever rank holds which: on the CPU the MPI version passes the running sum down the
// chain of ranks, each adding its shards in order, and the last broadcasts it. Floating-point
// addition is not associative, so this (not a tree all-reduce) is what makes W ranks of b
// samples compute the same bits as 1 rank of W b samples in W shards, and what makes a run
// resume on a different number of ranks and continue identically. The chain costs W - 1
// hops of the whole gradient; NCCL's ring all-reduce (engine/distributed/nccl_collective.cpp)
// is the fast, not order-preserving, alternative on GPUs.
//
// SingleProcess is the world of one: the fold, done locally. The MPI and NCCL worlds live in
// engine/distributed/ (built when OpenMPI is found) and are opened by open_world().
#pragma once

#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ddpm {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "1 process", "MPI, 4 ranks (CPU gradients summed in rank order)", ...
  virtual std::string describe() const = 0;
  // sum = this rank's parts folded after every earlier rank's, on every rank. parts: one
  // or more tensors of sum's shape, dtype and device; sum is overwritten.
  virtual void sum_in_rank_order(const std::vector<Tensor>& parts, const Tensor& sum) = 0;
  // Every rank's `mine` (the same length on each rank), concatenated in rank order.
  virtual std::vector<double> all_gather(const std::vector<double>& mine) = 0;
  virtual std::vector<std::string> all_gather_text(const std::string& mine) = 0;
  virtual std::string broadcast_text(const std::string& from_rank0) = 0;
  virtual void barrier() = 0;
};

// parts[0] + parts[1] + ... left to right into sum (the world of one's whole reduction, and
// each MPI rank's share of it).
void fold_in_order(const std::vector<Tensor>& parts, const Tensor& sum, bool sum_holds_prefix);

class SingleProcess : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override { return "1 process"; }
  void sum_in_rank_order(const std::vector<Tensor>& parts, const Tensor& sum) override {
    fold_in_order(parts, sum, false);
  }
  std::vector<double> all_gather(const std::vector<double>& mine) override { return mine; }
  std::vector<std::string> all_gather_text(const std::string& mine) override { return {mine}; }
  std::string broadcast_text(const std::string& from_rank0) override { return from_rank0; }
  void barrier() override {}
};

}  // namespace ddpm
