// The MPI world: OpenMPI's MPI_COMM_WORLD with the default error handler (errors are fatal
// to the whole job). The gradient sum is the chain of engine/collective.h:
//
//   rank 0:      S = s_0 (+ its later shards)           send S to rank 1
//   rank r:      receive S from r - 1, S += its shards   send S to r + 1
//   rank W - 1:  receive, add, then broadcast S to all ranks
//
// 2 (W - 1) messages of the whole gradient per step, in sequence: a CPU run's gradient is a
// few MB, and this is what keeps the bits independent of W. Messages larger than 2^31
// elements are split (MPI counts are int).
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "engine/check.h"
#include "engine/distributed/backends.h"

namespace ddpm::distributed {
namespace {

constexpr int kChainTag = 71;
constexpr int64_t kMaxCount = 1 << 30;  // elements per MPI call (int counts, with margin)

MPI_Datatype mpi_type(DType t) {
  CHECK(t == DType::F32 || t == DType::F64, "MPI gradient sum: dtype " << dtype_name(t)
                                                                        << " (f32 or f64 only)");
  return t == DType::F32 ? MPI_FLOAT : MPI_DOUBLE;
}

// Calls f(pointer, count) for each piece of at most kMaxCount elements of t's host data.
template <class F>
void in_pieces(const Tensor& t, F f) {
  char* p = static_cast<char*>(t.raw());
  const int64_t n = t.numel(), bytes = static_cast<int64_t>(dtype_size(t.dtype()));
  for (int64_t i = 0; i < n; i += kMaxCount)
    f(p + i * bytes, static_cast<int>(std::min(kMaxCount, n - i)));
}

class MpiWorld : public Collective {
 public:
  MpiWorld() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;  // only the main thread calls MPI; OpenMP threads never do
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      std::atexit([] {
        int finalised = 0;
        MPI_Finalized(&finalised);
        if (!finalised) MPI_Finalize();
      });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override {
    std::ostringstream s;
    s << "MPI, " << size_ << " rank" << (size_ == 1 ? "" : "s")
      << " (gradients summed shard by shard in rank order)";
    return s.str();
  }

  void sum_in_rank_order(const std::vector<Tensor>& parts, const Tensor& sum) override {
    if (sum.device() != Device::CPU) {  // staged through the host: the same chain, same bits
      std::vector<Tensor> host;
      for (const Tensor& p : parts) host.push_back(p.to(Device::CPU));
      Tensor s = sum.to(Device::CPU);
      sum_in_rank_order(host, s);
      sum.copy_from(s);
      return;
    }
    const MPI_Datatype type = mpi_type(sum.dtype());
    if (rank_ > 0)
      in_pieces(sum, [&](void* p, int n) {
        MPI_Recv(p, n, type, rank_ - 1, kChainTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      });
    fold_in_order(parts, sum, /*sum_holds_prefix=*/rank_ > 0);
    if (rank_ + 1 < size_)
      in_pieces(sum, [&](void* p, int n) { MPI_Send(p, n, type, rank_ + 1, kChainTag, MPI_COMM_WORLD); });
    in_pieces(sum, [&](void* p, int n) { MPI_Bcast(p, n, type, size_ - 1, MPI_COMM_WORLD); });
  }

  std::vector<double> all_gather(const std::vector<double>& mine) override {
    const std::vector<int64_t> lengths = gather_lengths(static_cast<int64_t>(mine.size()));
    for (int r = 1; r < size_; ++r)
      CHECK(lengths[r] == lengths[0], "all_gather: rank " << r << " sent " << lengths[r]
                                                           << " values, rank 0 " << lengths[0]);
    std::vector<double> all(mine.size() * static_cast<size_t>(size_));
    MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(),
                  static_cast<int>(mine.size()), MPI_DOUBLE, MPI_COMM_WORLD);
    return all;
  }

  std::vector<std::string> all_gather_text(const std::string& mine) override {
    const std::vector<int64_t> lengths = gather_lengths(static_cast<int64_t>(mine.size()));
    std::vector<int> counts(size_), offsets(size_);
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      counts[r] = static_cast<int>(lengths[r]);
      offsets[r] = total;
      total += counts[r];
    }
    std::string all(static_cast<size_t>(total), '\0');
    MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(), counts.data(),
                   offsets.data(), MPI_CHAR, MPI_COMM_WORLD);
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(offsets[r], counts[r]));
    return out;
  }

  std::string broadcast_text(const std::string& from_rank0) override {
    int64_t n = static_cast<int64_t>(from_rank0.size());
    MPI_Bcast(&n, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    std::string s = rank_ == 0 ? from_rank0 : std::string(static_cast<size_t>(n), '\0');
    MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
    return s;
  }

  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }

 private:
  std::vector<int64_t> gather_lengths(int64_t mine) {
    std::vector<int64_t> all(static_cast<size_t>(size_));
    MPI_Allgather(&mine, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, MPI_COMM_WORLD);
    return all;
  }

  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Collective> make_mpi_world() { return std::make_unique<MpiWorld>(); }

}  // namespace ddpm::distributed
