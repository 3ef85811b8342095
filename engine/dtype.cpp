#include "engine/dtype.h"

#include <cmath>
#include <cstring>

#include "engine/check.h"

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

bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // keep it a NaN
  const uint32_t rounding = 0x7FFF + ((u >> 16) & 1);                      // nearest, ties to even
  return bf16{static_cast<uint16_t>((u + rounding) >> 16)};
}

float bf16_to_float(bf16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace ddpm
