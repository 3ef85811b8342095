// Carving one workspace (floats, from a *_workspace function) into a kernel's buffers: bf16
// buffers and fp32 ones, each 256-byte aligned. The same walk sizes the workspace (base
// null: every buffer null, used() the floats needed) and places the buffers in it, so the
// two cannot disagree. Host code only.
#pragma once

#include <cstdint>

namespace ddpm::cuda {

class Carve {
 public:
  explicit Carve(float* base) : base_(base) {}
  uint16_t* bf16(int64_t count) { return reinterpret_cast<uint16_t*>(take((count + 1) / 2)); }
  float* floats(int64_t count) { return take(count); }
  int64_t used() const { return used_; }

 private:
  float* take(int64_t floats) {  // null for nothing: never a pointer past the end
    float* p = base_ && floats > 0 ? base_ + used_ : nullptr;
    used_ += (floats + 63) / 64 * 64;
    return p;
  }
  float* base_;
  int64_t used_ = 0;
};

}  // namespace ddpm::cuda
