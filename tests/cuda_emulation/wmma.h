// WMMA (nvcuda::wmma, the warp-level tensor-core API of mma.h), emulated for the shapes the
// engine uses: TF32 m16n16k8 with fp32 accumulators.
//
// CUDA leaves the mapping of fragment elements to lanes unspecified. The emulation uses the
// layouts the PTX ISA documents for mma.sync.m16n8k8 with .tf32 operands (a 16x16x8 WMMA is
// two such instructions side by side in n), with g = lane / 4 and t = lane % 4:
//   matrix_a (16 x 8)   x[i] = A[g + 8 (i & 1)][t + 4 (i >> 1)]            i = 0..3
//   matrix_b (8 x 16)   x[i] = B[t + 4 (i & 1)][g + 8 (i >> 1)]            i = 0..3
//   accumulator (16x16) x[i] = C[g + 8 ((i & 3) >> 1)][8 (i >> 2) + 2t + (i & 1)]  i = 0..7
// A kernel that only applies per-element operations to x[] (as __float_to_tf32 and scaling
// do) gives the same result for any mapping; one that depends on which lane holds what does
// not, and then only a GPU tells.
//
// Like the hardware, mma_sync reads only the top 19 bits of each fp32 operand (a TF32
// value: the low 13 mantissa bits are dropped, not rounded), multiplies exactly and adds as
// the tensor cores add, in blocks of 4 truncated toward zero (tensor_core_sum.h: an H200's
// bits). load/store trap on what the PTX ISA requires: a 256-bit aligned pointer,
// a leading dimension that is a multiple of 16 bytes, the same pointer and leading
// dimension in every lane, and all 32 lanes present.
//
// What this cannot prove: a fragment layout misunderstood the same way here and in a kernel
// would pass here and fail on a GPU. The GPU tests remain the final word.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include "tests/cuda_emulation/block.h"
#include "tests/cuda_emulation/builtins.h"
#include "tests/cuda_emulation/tensor_core_sum.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

struct Coord {
  int row, col;
};

// Map<Use, M, N, K, T>: the element type, the matrix the fragment holds (rows x cols) and
// which element lane `lane` holds in x[i]. Shapes without a Map do not compile.
template <class Use, int M, int N, int K, class T>
struct Map;

template <>
struct Map<matrix_a, 16, 16, 8, precision::tf32> {
  using Element = float;
  static constexpr int kRows = 16, kCols = 8, kCount = 4;
  static Coord at(int lane, int i) { return {lane / 4 + 8 * (i & 1), lane % 4 + 4 * (i >> 1)}; }
};

template <>
struct Map<matrix_b, 16, 16, 8, precision::tf32> {
  using Element = float;
  static constexpr int kRows = 8, kCols = 16, kCount = 4;
  static Coord at(int lane, int i) { return {lane % 4 + 4 * (i & 1), lane / 4 + 8 * (i >> 1)}; }
};

template <>
struct Map<accumulator, 16, 16, 8, float> {
  using Element = float;
  static constexpr int kRows = 16, kCols = 16, kCount = 8;
  static Coord at(int lane, int i) {
    return {lane / 4 + 8 * ((i & 3) >> 1), 8 * (i >> 2) + 2 * (lane % 4) + (i & 1)};
  }
};

// What the tensor core reads of an fp32 operand in TF32 mode: sign, exponent, 10 bits.
inline float tf32_operand(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits &= 0xffffe000u;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Element c of a matrix in memory, row- or column-major with leading dimension ldm.
template <class T>
T& element(T* ptr, unsigned ldm, bool row_major, Coord c) {
  return row_major ? ptr[c.row * ldm + c.col] : ptr[c.col * ldm + c.row];
}

// The checks of load/store_matrix_sync, as one warp collective.
void check_matrix_access(const char* op, const void* ptr, unsigned ldm, size_t element_bytes);

}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using Map = detail::Map<Use, M, N, K, T>;
  using element_type = typename Map::Element;
  static constexpr int num_elements = Map::kCount;
  element_type x[Map::kCount];
};

// cvt.rna.tf32.f32: round to the nearest TF32 value, ties away from zero.
inline float __float_to_tf32(float x) {
  if (!std::isfinite(x)) return x;
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x1000u) & 0xffffe000u;  // on the magnitude: sign-magnitude format
  std::memcpy(&x, &bits, 4);
  return x;
}

template <class Use, int M, int N, int K, class T, class L, class V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& value) {
  for (auto& e : f.x) e = static_cast<typename fragment<Use, M, N, K, T, L>::element_type>(value);
}

// matrix_a / matrix_b: the layout is the fragment's type parameter.
template <class Use, int M, int N, int K, class T, class L, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* ptr, unsigned ldm) {
  static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>,
                "matrix_a/matrix_b fragments carry row_major or col_major");
  using Map = typename fragment<Use, M, N, K, T, L>::Map;
  detail::check_matrix_access("wmma::load_matrix_sync", ptr, ldm, sizeof(P));
  const int lane = cuda_emu::lane_id();
  for (int i = 0; i < Map::kCount; ++i)
    f.x[i] = detail::element(ptr, ldm, std::is_same_v<L, row_major>, Map::at(lane, i));
}

template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* ptr, unsigned ldm,
                      layout_t layout) {
  using Map = typename fragment<accumulator, M, N, K, T>::Map;
  detail::check_matrix_access("wmma::load_matrix_sync", ptr, ldm, sizeof(T));
  const int lane = cuda_emu::lane_id();
  for (int i = 0; i < Map::kCount; ++i)
    f.x[i] = detail::element(ptr, ldm, layout == mem_row_major, Map::at(lane, i));
}

template <int M, int N, int K, class T>
void store_matrix_sync(T* ptr, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                       layout_t layout) {
  using Map = typename fragment<accumulator, M, N, K, T>::Map;
  detail::check_matrix_access("wmma::store_matrix_sync", ptr, ldm, sizeof(T));
  const int lane = cuda_emu::lane_id();
  for (int i = 0; i < Map::kCount; ++i)
    detail::element(ptr, ldm, layout == mem_row_major, Map::at(lane, i)) = f.x[i];
}

// d = a b + c over the warp: every lane contributes its a and b elements, then computes its
// own elements of d. d may be c.
template <int M, int N, int K, class TA, class LA, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TA, LB>& b,
              const fragment<accumulator, M, N, K, TC>& c) {
  using MapA = typename fragment<matrix_a, M, N, K, TA, LA>::Map;
  using MapB = typename fragment<matrix_b, M, N, K, TA, LB>::Map;
  using MapC = typename fragment<accumulator, M, N, K, TC>::Map;
  static_assert(std::is_same_v<TA, precision::tf32>, "only TF32 products are emulated so far");
  constexpr int kA = MapA::kCount, kB = MapB::kCount;  // a lane's registers of a and b
  uint32_t mine[kA + kB];
  std::memcpy(mine, a.x, sizeof(float) * kA);
  std::memcpy(mine + kA, b.x, sizeof(float) * kB);
  uint32_t all[32][kA + kB];
  cuda_emu::warp_exchange_registers("wmma::mma_sync", mine, kA + kB, &all[0][0]);
  const auto value = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return detail::tf32_operand(f);
  };
  float full_a[M][K], full_b[K][N];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < kA; ++i) {
      const detail::Coord p = MapA::at(lane, i);
      full_a[p.row][p.col] = value(all[lane][i]);
    }
    for (int i = 0; i < kB; ++i) {
      const detail::Coord p = MapB::at(lane, i);
      full_b[p.row][p.col] = value(all[lane][kA + i]);
    }
  }
  const int lane = cuda_emu::lane_id();
  TC result[MapC::kCount];  // d may be c
  for (int i = 0; i < MapC::kCount; ++i) {
    const detail::Coord p = MapC::at(lane, i);
    float b_col[K];
    for (int k = 0; k < K; ++k) b_col[k] = full_b[k][p.col];
    result[i] = cuda_emu::tensor_core_dot(c.x[i], full_a[p.row], b_col, K, cuda_emu::kTf32Sum);
  }
  for (int i = 0; i < MapC::kCount; ++i) d.x[i] = result[i];
}

}  // namespace nvcuda::wmma

namespace nvcuda::wmma::detail {

inline void check_matrix_access(const char* op, const void* ptr, unsigned ldm,
                                size_t element_bytes) {
  struct Access {
    const void* ptr;
    unsigned ldm;
  } mine{ptr, ldm};
  unsigned lanes = 0;
  const uint64_t* all =
      cuda_emu::warp_collective_begin(op, 0xffffffffu, cuda_emu::to_bits(&mine), &lanes);
  char text[200];
  const char* problem = nullptr;
  if (lanes != 0xffffffffu) {
    problem = "needs all 32 lanes of the warp";
  } else if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0) {
    std::snprintf(text, sizeof text, "pointer %p is not 32-byte (256-bit) aligned", ptr);
    problem = text;
  } else if (ldm * element_bytes % 16 != 0) {
    std::snprintf(text, sizeof text, "leading dimension %u elements is not a multiple of 16 bytes",
                  ldm);
    problem = text;
  } else {
    for (int lane = 0; lane < 32 && problem == nullptr; ++lane) {
      const Access* other = cuda_emu::from_bits<const Access*>(all[lane]);
      if (other->ptr != ptr || other->ldm != ldm) {
        std::snprintf(text, sizeof text,
                      "lane %d passes (%p, %u), this lane (%p, %u): the warp "
                      "must agree",
                      lane, other->ptr, other->ldm, ptr, ldm);
        problem = text;
      }
    }
  }
  cuda_emu::warp_collective_end();
  if (problem != nullptr) cuda_emu::trap((std::string(op) + ": " + problem).c_str());
}

}  // namespace nvcuda::wmma::detail
