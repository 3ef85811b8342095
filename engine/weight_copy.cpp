#include "engine/weight_copy.h"

#include "engine/check.h"
#include "engine/device.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/elementwise.cuh"
#endif

namespace ddpm {

namespace {

Storage& storage_of(const Tensor& t) {
  CHECK(t.defined() && t.impl().storage, "weight copy: a tensor with no storage");
  return *t.impl().storage;
}

// bf16(the buffer) into its copy: one conversion pass (elementwise.cuh), on the engine's
// stream like every kernel, so it is ordered after the writes that made the copy stale.
void refresh(Storage& s) {
#if DDPM_WITH_CUDA
  cuda::to_bf16_bits(static_cast<int64_t>(s.bytes() / sizeof(float)),
                     static_cast<const float*>(s.data()),
                     static_cast<uint16_t*>(s.bf16_copy().bits->data()));
#endif
  s.bf16_copy().version = s.version();
}

// The copy, converted again first if the buffer was written since it was made.
Storage::Bf16Copy& fresh(Storage& s) {
  if (s.bf16_copy().version != s.version()) refresh(s);
  return s.bf16_copy();
}

}  // namespace

void keep_bf16_copy(const Tensor& flat) {
  CHECK(flat.dtype() == DType::F32 && flat.device() == Device::CUDA,
        "keep_bf16_copy: " << flat.describe() << " is not an f32 buffer on the GPU");
  Storage& s = storage_of(flat);
  if (s.bf16_copy().bits) return;
  s.bf16_copy().bits = std::make_shared<Storage>(Device::CUDA, s.bytes() / 2);
  refresh(s);
}

bool has_bf16_copy(const Tensor& t) {
  return t.defined() && t.impl().storage && t.impl().storage->bf16_copy().bits != nullptr;
}

void drop_bf16_copy(const Tensor& flat) { storage_of(flat).bf16_copy() = {}; }

const uint16_t* bf16_copy_of(const Tensor& t) {
  if (!has_bf16_copy(t) || t.dtype() != DType::F32) return nullptr;
  Storage& s = storage_of(t);
  return static_cast<const uint16_t*>(fresh(s).bits->data()) + t.impl().offset / sizeof(float);
}

void write_with_copy(const Tensor& flat, const std::function<void(uint16_t* copy)>& write) {
  Storage& s = storage_of(flat);
  const bool copy = s.bf16_copy().bits != nullptr;
  CHECK(!copy || (flat.impl().offset == 0 && flat.nbytes() == s.bytes()),
        "write_with_copy: " << flat.describe() << " is a window, not the whole buffer");
  write(copy ? static_cast<uint16_t*>(fresh(s).bits->data()) : nullptr);
  s.note_write();
  if (copy) s.bf16_copy().version = s.version();
}

}  // namespace ddpm
