// GPU gradients summed across ranks with NCCL's all-reduce (ring or tree, NCCL's choice),
// on the engine's stream, then waited for. Each rank first folds its own shards in order
// (engine/collective.h), so with one rank the result is exactly the local fold. Across ranks
// NCCL's summation order is its own: deterministic for a fixed world and topology, but not
// the 1-rank bits; the bit-exact chain (the MPI world) stages through the host instead.
// The unique id travels over the host world (MPI) as text.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <sstream>

#include "engine/check.h"
#include "engine/cuda_stream.h"
#include "engine/distributed/backends.h"

namespace ddpm::distributed {
namespace {

#define NCCL_CHECK(call)                                                                    \
  do {                                                                                      \
    const ncclResult_t r_ = (call);                                                         \
    CHECK(r_ == ncclSuccess, "NCCL: " #call " failed: " << ncclGetErrorString(r_));         \
  } while (0)

class NcclWorld : public Collective {
 public:
  explicit NcclWorld(std::unique_ptr<Collective> host) : host_(std::move(host)) {
    ncclUniqueId id{};
    if (host_->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    const std::string text = host_->broadcast_text(
        host_->rank() == 0 ? std::string(id.internal, sizeof(id.internal)) : std::string());
    CHECK(text.size() == sizeof(id.internal), "NCCL unique id: " << text.size() << " bytes");
    std::copy(text.begin(), text.end(), id.internal);
    NCCL_CHECK(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()));
  }
  ~NcclWorld() override { ncclCommDestroy(comm_); }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string describe() const override {
    std::ostringstream s;
    s << "NCCL " << NCCL_MAJOR << "." << NCCL_MINOR << ", " << size()
      << " rank(s) (GPU gradients all-reduced; host exchanges over " << host_->describe() << ")";
    return s.str();
  }

  void sum_in_rank_order(const std::vector<Tensor>& parts, const Tensor& sum) override {
    if (sum.device() != Device::CUDA) return host_->sum_in_rank_order(parts, sum);
    fold_in_order(parts, sum, false);
    CHECK(sum.dtype() == DType::F32, "NCCL gradient sum: f32 only, got " << sum.describe());
    NCCL_CHECK(ncclAllReduce(sum.raw(), sum.raw(), static_cast<size_t>(sum.numel()), ncclFloat,
                             ncclSum, comm_, engine_stream()));
    const cudaError_t e = cudaStreamSynchronize(engine_stream());
    CHECK(e == cudaSuccess, "NCCL all-reduce: " << cudaGetErrorString(e));
  }
  std::vector<double> all_gather(const std::vector<double>& mine) override {
    return host_->all_gather(mine);
  }
  std::vector<std::string> all_gather_text(const std::string& mine) override {
    return host_->all_gather_text(mine);
  }
  std::string broadcast_text(const std::string& from_rank0) override {
    return host_->broadcast_text(from_rank0);
  }
  void barrier() override { host_->barrier(); }

 private:
  std::unique_ptr<Collective> host_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Collective> make_nccl_world(std::unique_ptr<Collective> host) {
  return std::make_unique<NcclWorld>(std::move(host));
}

}  // namespace ddpm::distributed
