#include "models/ddpm/captured_step.h"

#include <vector>

#include "engine/check.h"

namespace ddpm {

namespace {

// The model's dtype for a batch: f32 for raw bytes.
DType model_dtype(const Tensor& x0) { return x0.dtype() == DType::U8 ? DType::F32 : x0.dtype(); }

// Copies host values into a fixed device tensor (a staged upload; from_vector checks the count).
template <class T>
void upload_into(const Tensor& dst, const std::vector<T>& values) {
  dst.copy_from(Tensor::from_vector<T>(dst.shape(), values).to(dst.dtype()));
}

}  // namespace

CapturedStep::CapturedStep(const TrainBatch& like, bool importance) : batch_(like) {
  const Tensor& x0 = like.x0;
  CHECK(x0.device() != Device::CPU, "a captured step needs a batch on the GPU, got "
                                        << x0.describe());
  const int64_t n = x0.shape()[0];
  batch_.x0 = Tensor::empty(x0.shape(), x0.dtype(), x0.device());
  t_ = Tensor::empty(Shape{n}, DType::I32, x0.device());
  t_model_ = Tensor::empty(Shape{n}, model_dtype(x0), x0.device());
  if (importance) importance_ = Tensor::empty(Shape{n}, model_dtype(x0), x0.device());
}

void CapturedStep::stage(const TrainBatch& batch, const TimestepBatch& tb) {
  const Tensor& x0 = batch.x0;
  CHECK(x0.shape() == batch_.x0.shape() && x0.dtype() == batch_.x0.dtype() &&
            x0.device() == batch_.x0.device(),
        "cuda_graph: the step was captured for a batch " << batch_.x0.describe()
                                                         << "; this step's batch is "
                                                         << x0.describe());
  CHECK(batch.flip == batch_.flip && batch.flip_seed == batch_.flip_seed &&
            batch.flip_stream == batch_.flip_stream,
        "cuda_graph: the step was captured with the flip rule (flip "
            << batch_.flip << ", seed " << batch_.flip_seed << ", stream " << batch_.flip_stream
            << "); this batch has (flip " << batch.flip << ", seed " << batch.flip_seed
            << ", stream " << batch.flip_stream << ")");
  batch_.x0.copy_from(x0);  // device to device
  upload_into<int32_t>(t_, std::vector<int32_t>(tb.t.begin(), tb.t.end()));
  upload_into<double>(t_model_, std::vector<double>(tb.t.begin(), tb.t.end()));
  if (importance_.defined()) upload_into<double>(importance_, tb.weights);
}

void CapturedStep::capture(const std::function<Tensor()>& work) {
  graph_.capture([&] { summary_ = work(); });
}

}  // namespace ddpm
