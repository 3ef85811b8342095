// Element types a tensor can hold. f32 is the working type everywhere; f64 exists so the CPU
// reference kernels can run gradient checks in double; bf16 is carried from day one so that
// bf16 storage with fp32 accumulation can come later without a redesign; i32 holds timesteps
// and labels, u8 raw image bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ddpm {

enum class DType { F32, F64, BF16, I32, U8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);

// bfloat16 as raw bits: the top 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
  uint16_t bits;
};
bf16 float_to_bf16(float f);
float bf16_to_float(bf16 b);

// The DType of a C++ element type, for typed access checks (Tensor::data<T>()).
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };

}  // namespace ddpm
