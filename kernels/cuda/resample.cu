// Nearest 2x upsampling, the upsample-conv's phase interleaving, and strided block copies
// (channel concat/split) on the GPU.
//
// Work mapping: the upsample, both ways, one thread per INPUT element (the forward scatters
// it to its 2x2 block of copies, the backward gathers their four gradients; the phases'
// interleaving the same with four sources), so no two threads write the same address and no
// atomics are needed; the slices, one thread per element, or per 16-, 8- or 4-byte word of a
// copy whose layout allows it (the interleaving too). Consecutive
// threads touch consecutive channels, so loads and stores coalesce along C. Memory-bound.
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/resample.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/cuda/upsample_conv.cuh"

namespace ddpm::cuda {

namespace {

// Input element i = ((n * H + ih) * W + iw) * C + c, as the input row r = n * H + ih, the
// column iw and the channel c (two divisions), and where its 2x2 block of copies starts in
// the output: pixel (n, 2 ih, 2 iw) of the (2H, 2W) map is row 2 r, column 2 iw.
struct UpsamplePixel {
  int64_t top_left;  // the output index of the block's top-left copy
  __device__ UpsamplePixel(const UpsampleShape& s, int64_t i) {
    const int64_t p = i / s.c, r = p / s.w, iw = p - r * s.w, c = i - p * s.c;
    top_left = ((2 * r) * (2 * s.w) + 2 * iw) * s.c + c;
  }
};

// T: the storage, fp32 or bf16 bits (storage.cuh); a copy moves the bits, sums are in fp32 and
// a bf16 store rounds once. Both directions take a thread per input element, so the index
// arithmetic (two 64-bit divisions, each tens of instructions even on the 32-bit path the
// compiler adds) is paid once per 2x2 block of outputs. A thread per output element, as the
// forward had, pays three for each of them (nvcc -ptx, sm_90: 95 instructions an output,
// against 80 for a block of four now), more issue than the bytes a copy moves can hide.

// y's 2x2 block = x[i]: four stores, each coalesced along C across the warp.
template <class T>
__global__ void upsample_kernel(UpsampleShape s, const T* x, T* y) {
  const int64_t ow_n = 2 * s.w;
  DDPM_GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
    const UpsamplePixel q(s, i);
    const T v = x[i];
    y[q.top_left] = v;
    y[q.top_left + s.c] = v;
    y[q.top_left + ow_n * s.c] = v;
    y[q.top_left + ow_n * s.c + s.c] = v;
  }
}

// dx = (add ? dx : 0) + the four gradients of the pixel's copies
template <class T>
__global__ void upsample_backward_kernel(UpsampleShape s, const T* dy, T* dx, bool add) {
  const int64_t ow_n = 2 * s.w;
  DDPM_GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
    const int64_t g = UpsamplePixel(s, i).top_left;
    store_grad(dx, i, load(dy, g) + load(dy, g + s.c) + load(dy, g + ow_n * s.c) +
                          load(dy, g + ow_n * s.c + s.c), add);
  }
}

// The four output phases of an upsample-conv (kernels/upsample_conv.h) in and out of one
// map: the upsample's mapping with a source (or destination) per copy of the 2x2 block,
// phase p = 2a + b at row a, column b of it. Both directions copy bits, so T may be a Word
// of several elements (interleave_as below).
template <class T>
__global__ void interleave_kernel(UpsampleShape s, Phases<const T> ys, T* y) {
  const int64_t ow_n = 2 * s.w;
  DDPM_GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
    const int64_t q = UpsamplePixel(s, i).top_left;
    y[q] = ys.p[0][i];
    y[q + s.c] = ys.p[1][i];
    y[q + ow_n * s.c] = ys.p[2][i];
    y[q + ow_n * s.c + s.c] = ys.p[3][i];
  }
}

template <class T>
__global__ void deinterleave_kernel(UpsampleShape s, const T* dy, Phases<T> dys) {
  const int64_t ow_n = 2 * s.w;
  DDPM_GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
    const int64_t q = UpsamplePixel(s, i).top_left;
    dys.p[0][i] = dy[q];
    dys.p[1][i] = dy[q + s.c];
    dys.p[2][i] = dy[q + ow_n * s.c];
    dys.p[3][i] = dy[q + ow_n * s.c + s.c];
  }
}

template <bool kAccumulate, class T>
__global__ void slice_kernel(SliceShape s, const T* src, T* dst) {
  DDPM_GRID_STRIDE(i, s.rows * s.cols) {
    const int64_t r = i / s.cols, c = i % s.cols;
    if constexpr (kAccumulate) {
      store(dst, r * s.dst_ld + c, load(dst, r * s.dst_ld + c) + load(src, r * s.src_ld + c));
    } else {
      dst[r * s.dst_ld + c] = src[r * s.src_ld + c];
    }
  }
}

template <class T>
void upsample_forward(const UpsampleShape& s, const T* x, T* y) {
  const int64_t total = s.n * s.h * s.w * s.c;  // a thread per input element
  if (total == 0) return;
  DDPM_LAUNCH(upsample_kernel<T>, grid_for(total), kThreads)(s, x, y);
}

template <class T>
void upsample_backward(const UpsampleShape& s, const T* dy, T* dx, GradWrite dx_write) {
  const int64_t total = s.n * s.h * s.w * s.c;
  if (total == 0) return;
  DDPM_LAUNCH(upsample_backward_kernel<T>, grid_for(total), kThreads)(
      s, dy, dx, dx_write == GradWrite::Accumulate);
}

template <bool kAccumulate, class T>
void slice(const SliceShape& s, const T* src, T* dst) {
  if (s.rows * s.cols == 0) return;
  DDPM_LAUNCH((slice_kernel<kAccumulate, T>), grid_for(s.rows * s.cols), kThreads)(s, src, dst);
}

// The phases' copies in Words of k elements of T when C and every address allow (the
// U-Net's channel counts are multiples of 8: 16-byte Words, 8 bf16 or 4 fp32 per thread and
// division), else element by element. Returns false, copying nothing, when they do not.
template <class Word, class T, class U>
bool phases_fit(const UpsampleShape& s, const T* y, U* const (&ys)[4]) {
  constexpr int64_t k = sizeof(Word) / sizeof(T);
  bool fit = s.c % k == 0 && rows_align(s.c, y, k);
  for (const T* p : ys) fit = fit && rows_align(s.c, p, k);
  return fit;
}

template <class Word, class T>
UpsampleShape in_words(const UpsampleShape& s) {
  return {s.n, s.h, s.w, s.c / static_cast<int64_t>(sizeof(Word) / sizeof(T))};
}

template <class Word, class T>
bool interleave_as(const UpsampleShape& s, const T* const (&ys)[4], T* y) {
  if (!phases_fit<Word>(s, y, ys)) return false;
  const UpsampleShape w = in_words<Word, T>(s);
  Phases<const Word> from;
  for (int p = 0; p < 4; ++p) from.p[p] = reinterpret_cast<const Word*>(ys[p]);
  if (w.n * w.h * w.w * w.c > 0)
    DDPM_LAUNCH(interleave_kernel<Word>, grid_for(w.n * w.h * w.w * w.c), kThreads)(
        w, from, reinterpret_cast<Word*>(y));
  return true;
}

template <class Word, class T>
bool deinterleave_as(const UpsampleShape& s, const T* dy, T* const (&dys)[4]) {
  if (!phases_fit<Word>(s, dy, dys)) return false;
  const UpsampleShape w = in_words<Word, T>(s);
  Phases<Word> to;
  for (int p = 0; p < 4; ++p) to.p[p] = reinterpret_cast<Word*>(dys[p]);
  if (w.n * w.h * w.w * w.c > 0)
    DDPM_LAUNCH(deinterleave_kernel<Word>, grid_for(w.n * w.h * w.w * w.c), kThreads)(
        w, reinterpret_cast<const Word*>(dy), to);
  return true;
}

// A copy moves bits, so when the column count, both row strides and both addresses are
// multiples of a Word (k elements of T), the slice is the same copy of (rows, cols / k)
// Words: one thread, one division and one access per k elements instead of per element.
// The U-Net's concatenations take 16-byte Words (4 fp32, 8 bf16: its channel counts are
// multiples of 8). Returns false, copying nothing, when the layout does not allow it.
template <class Word, class T>
bool copy_as(const SliceShape& s, const T* src, T* dst) {
  constexpr int64_t k = sizeof(Word) / sizeof(T);
  static_assert(sizeof(Word) % sizeof(T) == 0, "a Word holds whole elements");
  if (s.cols % k != 0 || !rows_align(s.src_ld, src, k) || !rows_align(s.dst_ld, dst, k))
    return false;
  slice<false>(SliceShape{s.rows, s.cols / k, s.src_ld / k, s.dst_ld / k},
               reinterpret_cast<const Word*>(src), reinterpret_cast<Word*>(dst));
  return true;
}

}  // namespace

void upsample_nearest2x_forward(const UpsampleShape& s, const float* x, float* y) {
  upsample_forward(s, x, y);
}
void upsample_nearest2x_forward(const UpsampleShape& s, const uint16_t* x, uint16_t* y) {
  upsample_forward(s, x, y);
}
void upsample_nearest2x_backward(const UpsampleShape& s, const float* dy, float* dx,
                                 GradWrite dx_write) {
  upsample_backward(s, dy, dx, dx_write);
}
void upsample_nearest2x_backward(const UpsampleShape& s, const uint16_t* dy, uint16_t* dx,
                                 GradWrite dx_write) {
  upsample_backward(s, dy, dx, dx_write);
}
// the widest Word the layout allows
void slice_copy(const SliceShape& s, const float* src, float* dst) {
  if (!copy_as<float4>(s, src, dst) && !copy_as<float2>(s, src, dst)) slice<false>(s, src, dst);
}
void slice_copy(const SliceShape& s, const uint16_t* src, uint16_t* dst) {
  if (!copy_as<uint4>(s, src, dst) && !copy_as<uint2>(s, src, dst) &&
      !copy_as<uint32_t>(s, src, dst))
    slice<false>(s, src, dst);
}
// the widest Word the layout allows, as slice_copy above
void interleave_phases_forward(const UpsampleShape& s, const float* const (&ys)[4], float* y) {
  interleave_as<float4>(s, ys, y) || interleave_as<float2>(s, ys, y) ||
      interleave_as<float>(s, ys, y);
}
void interleave_phases_forward(const UpsampleShape& s, const uint16_t* const (&ys)[4],
                               uint16_t* y) {
  interleave_as<uint4>(s, ys, y) || interleave_as<uint2>(s, ys, y) ||
      interleave_as<uint32_t>(s, ys, y) || interleave_as<uint16_t>(s, ys, y);
}
void interleave_phases_backward(const UpsampleShape& s, const float* dy, float* const (&dys)[4]) {
  deinterleave_as<float4>(s, dy, dys) || deinterleave_as<float2>(s, dy, dys) ||
      deinterleave_as<float>(s, dy, dys);
}
void interleave_phases_backward(const UpsampleShape& s, const uint16_t* dy,
                                uint16_t* const (&dys)[4]) {
  deinterleave_as<uint4>(s, dy, dys) || deinterleave_as<uint2>(s, dy, dys) ||
      deinterleave_as<uint32_t>(s, dy, dys) || deinterleave_as<uint16_t>(s, dy, dys);
}
void slice_accumulate(const SliceShape& s, const float* src, float* dst) {
  slice<true>(s, src, dst);
}
void slice_accumulate(const SliceShape& s, const uint16_t* src, uint16_t* dst) {
  slice<true>(s, src, dst);
}

}  // namespace ddpm::cuda
