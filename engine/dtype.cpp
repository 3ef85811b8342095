#include "engine/dtype.h"

#include "engine/check.h"
#include "kernels/bf16.h"

namespace ddpm {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  THROW_ERROR("unknown dtype " << static_cast<int>(dt));
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "unknown";
}

bf16 float_to_bf16(float f) { return bf16{bf16_bits_from_float(f)}; }

float bf16_to_float(bf16 b) { return float_from_bf16_bits(b.bits); }

}  // namespace ddpm
