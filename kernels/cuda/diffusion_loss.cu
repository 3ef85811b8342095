// The fused diffusion loss on the GPU: corruption and loss + gradient, each one pass over the
// batch, eps regenerated from Philox in registers and never stored. Contract and formulas:
// kernels/cpu/diffusion_loss.h and kernels/diffusion_loss_math.h (shared with the CPU).
//
// Work mapping: a 1-D grid of n x chunks blocks (x only: its limit is 2^31 - 1, where y and
// z stop at 65,535): block j * chunks + c owns chunk c of sample j, so every element's
// sample, timestep and coefficients are the block's constants. A thread moves quads, 4
// consecutive elements: one Philox call yields 4 normals, so with dim % 4 == 0 a thread draws
// exactly a quad's values from one call and moves them with one 16-byte load/store (kVec4).
// Otherwise each element calls Philox for its own block of 4 (4x the arithmetic, same result).
//
// How many quads a thread moves (a chunk is 256 threads x 4 x that): one (shallow), or two
// (deep) from 2^22 elements of the batch. What sets it is latency, not bandwidth. A thread's
// work is ~280 instructions a quad (Philox's 10 rounds, then Box-Muller with the portable log
// and sincos: engine/philox.h; counted in the sm_90 SASS) after a chain of dependent loads
// (the step's keys; t[j], then the tables), and it needs its loads back before it can store.
// One quad deep, a thread has 16 bytes (32 with x0) in flight, and an H200 running the
// shallow kernel alone moved 28% of the peak bandwidth at 64x256x256x3, where the v target
// (1.5x the bytes) took 3% longer than epsilon: the time was not DRAM's. Deep, each thread
// issues every load of its quads before any arithmetic, so they are in flight behind the
// Philox work, the division of the loss's scale waits until after it, and the prologue is
// paid once per 8 elements. Two quads, not four: the loss kernel then holds 8 pred values
// (16 with x0) and takes 46 registers (ptxas, sm_90), five blocks of 256 an SM, 40 KB of
// loads in flight per SM on epsilon (80 on v); four quads took 82 registers, two blocks, the
// same bytes in flight with 16 warps instead of 40 to hide Philox's dependent multiplies.
// Small batches keep the shallow mapping: their grid is a wave or less, where more blocks
// run the same work with more warps (the CIFAR-10 step's 128 x 3072: 384 blocks, the same
// partials as the kernel before the deep mapping). The loss's partial sums depend on the
// mapping (x_t and dpred never do); the mapping depends on the shape only.
//
// Loss reduction, deterministic: each block sums its squared errors with a fixed-order tree
// (block_sum) into partial[j][c]; finish_kernel (one block) then sums each sample's partials
// with a warp (a fixed order: below), forms mse_j, per_sample_j = w_t mse_j and the batch
// loss with another fixed tree. No float atomics anywhere, so two runs give the same bits.
// The gradient needs no reduction (its scale 2 w_t importance_j / (n dim) is known up front)
// and is written in the same pass. Launches: corrupt 1; loss 2 (the data pass and a finish
// over n x chunks floats).
//
// Bytes at minimum per element (f32): corrupt reads x0 and writes x_t (8; 5 from bytes); the
// loss reads pred and writes dpred (8), plus x0 for the x0 / v targets (12; 9 from bytes).
// Nothing else touches DRAM: eps costs ~70 instructions per value (above) instead of 4 bytes
// written and 4 bytes read back per use.
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/cuda/diffusion_loss.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/diffusion_loss_math.h"

namespace ddpm::cuda {

namespace {

using namespace diffusion;

constexpr int kPerQuad = 4;  // elements of a quad: one Philox call's worth of normals

// The mapping's depth: quads each thread moves (module comment). Shallow below kDeepFrom
// elements of the batch, deep from there; set_diffusion_loss_quads can force either.
constexpr int kShallowQuads = 1, kDeepQuads = 2;
constexpr int64_t kDeepFrom = int64_t{1} << 22;
int forced_quads = 0;  // 0: by size

int quads_for(const DiffusionLossShape& s) {
  if (forced_quads) return forced_quads;
  return s.n * s.dim >= kDeepFrom ? kDeepQuads : kShallowQuads;
}

// Elements a block of kQuads-deep threads owns.
template <int kQuads>
constexpr int64_t chunk_elements() { return int64_t{kThreads} * kPerQuad * kQuads; }

// The elements a thread owns in its block's chunk (from base): value r (of 4 kQuads) is
// element base + 4 (q kThreads + tid) + r % 4 with q = r / 4 on the 16-byte path (quad q of
// the thread; a warp's quads are 512 consecutive bytes), else base + r kThreads + tid
// (consecutive threads, consecutive elements). One quad deep, the same elements as every
// earlier version of this kernel, so the same sums and bits.
template <bool kVec4>
__device__ __forceinline__ int64_t element(int64_t base, int r) {
  return kVec4 ? base + kPerQuad * ((r / kPerQuad) * kThreads + threadIdx.x) + r % kPerQuad
               : base + r * kThreads + threadIdx.x;
}

// v[r] = row[element r] (0 past dim), every load issued before any use: one 16-byte load a
// quad on the 16-byte path (a quad is inside dim whole or not at all: dim % 4 == 0).
template <bool kVec4, int kValues>
__device__ __forceinline__ void load_values(const float* row, int64_t base, int64_t dim,
                                            float (&v)[kValues]) {
#pragma unroll
  for (int q = 0; q < kValues / kPerQuad; ++q) {
    if constexpr (kVec4) {
      const int64_t i = element<true>(base, kPerQuad * q);
      const float4 f = i < dim ? *reinterpret_cast<const float4*>(row + i) : float4{};
      v[kPerQuad * q + 0] = f.x;
      v[kPerQuad * q + 1] = f.y;
      v[kPerQuad * q + 2] = f.z;
      v[kPerQuad * q + 3] = f.w;
    } else {
#pragma unroll
      for (int e = 0; e < kPerQuad; ++e) {
        const int64_t i = element<false>(base, kPerQuad * q + e);
        v[kPerQuad * q + e] = i < dim ? row[i] : 0.0f;
      }
    }
  }
}

// The 4 bytes of elements i .. i+3 of image img (NHWC), read mirrored left-right when
// `mirror`: the source of element i is found once (two divisions), the next three step from it
// (the next channel, else the pixel to its left in the source, else the next row), where
// x0_value divides for every element (three 32-bit divisions, ~55 instructions); the same
// sources.
__device__ __forceinline__ void load_byte_quad(const DiffusionLossShape& s, const uint8_t* img,
                                               int64_t i, bool mirror, uint32_t* raw) {
  if (!mirror) {
#pragma unroll
    for (int e = 0; e < kPerQuad; ++e) raw[e] = img[i + e];
    return;
  }
  // 32-bit index arithmetic: one image is far below 2^32 bytes
  const uint32_t c = static_cast<uint32_t>(s.c), w = static_cast<uint32_t>(s.w), row = w * c;
  const uint32_t ii = static_cast<uint32_t>(i), y0 = ii / row, x0 = (ii - y0 * row) / c;
  uint32_t y = y0, x = x0, ch = ii - y0 * row - x0 * c;
#pragma unroll
  for (int e = 0; e < kPerQuad; ++e) {
    raw[e] = img[y * row + (w - 1 - x) * c + ch];
    if (++ch == c) {
      ch = 0;
      if (++x == w) {
        x = 0;
        ++y;
      }
    }
  }
}

// Bytes to [-1, 1] through a table in shared memory: the block's 256 threads decode the 256
// byte values once (byte_to_unit, so the same bits), where each element divided by 127.5 (a
// correctly rounded division, ~10 instructions). Every thread of the block calls it.
__device__ __forceinline__ const float* byte_units() {
  static_assert(kThreads == 256, "a thread per byte value");
  __shared__ float units[256];
  units[threadIdx.x] = byte_to_unit(static_cast<uint8_t>(threadIdx.x));
  __syncthreads();
  return units;
}

// The same for sample j's x0: f32 rows as load_values on the 16-byte path; bytes on it a quad
// at a time (load_byte_quad), decoded by the table after every load is out; element by
// element otherwise (x0_value: bytes decoded, and read mirrored when the sample is). On the
// 16-byte path with bytes every thread of the block must call it (the table's barrier).
template <class X0, bool kVec4, int kValues>
__device__ __forceinline__ void load_x0(const DiffusionLossShape& s, const X0* x0, int64_t j,
                                        int64_t base, bool mirror, float (&v)[kValues]) {
  if constexpr (std::is_same_v<X0, float> && kVec4) {
    load_values<true>(x0 + j * s.dim, base, s.dim, v);
  } else if constexpr (kVec4) {
    uint32_t raw[kValues];
#pragma unroll
    for (int q = 0; q < kValues / kPerQuad; ++q) {
      const int64_t i = element<true>(base, kPerQuad * q);
      if (i < s.dim) {
        load_byte_quad(s, x0 + j * s.dim, i, mirror, raw + kPerQuad * q);
      } else {
#pragma unroll
        for (int e = 0; e < kPerQuad; ++e) raw[kPerQuad * q + e] = 0;
      }
    }
    const float* unit = byte_units();
#pragma unroll
    for (int r = 0; r < kValues; ++r) v[r] = unit[raw[r]];
  } else {
#pragma unroll
    for (int r = 0; r < kValues; ++r) {
      const int64_t i = element<kVec4>(base, r);
      v[r] = i < s.dim ? x0_value<float>(s, x0, j, i, mirror) : 0.0f;
    }
  }
}

// d[r] to row[element r] for the elements inside dim: one 16-byte store a quad on the
// 16-byte path.
template <bool kVec4, int kValues>
__device__ __forceinline__ void store_values(float* row, int64_t base, int64_t dim,
                                             const float (&d)[kValues]) {
#pragma unroll
  for (int q = 0; q < kValues / kPerQuad; ++q) {
    if constexpr (kVec4) {
      const int64_t i = element<true>(base, kPerQuad * q);
      if (i < dim)
        *reinterpret_cast<float4*>(row + i) =
            make_float4(d[kPerQuad * q], d[kPerQuad * q + 1], d[kPerQuad * q + 2],
                        d[kPerQuad * q + 3]);
    } else {
#pragma unroll
      for (int e = 0; e < kPerQuad; ++e) {
        const int64_t i = element<false>(base, kPerQuad * q + e);
        if (i < dim) row[i] = d[kPerQuad * q + e];
      }
    }
  }
}

// eps of values 4q .. 4q+3 (those inside dim; the others are never used): one Philox call
// on the 16-byte path, where they are one Philox block (j dim + i is a multiple of 4), one
// call per element otherwise (4x the arithmetic, the same values). s has its keys read
// (.base is the value): every kernel starts with read_step_keys.
template <bool kVec4>
__device__ __forceinline__ Normal4 quad_eps(const DiffusionLossShape& s, int64_t j,
                                            int64_t base, int q) {
  if constexpr (kVec4)
    return philox_normal4(
        s.noise_seed, s.noise_stream.base,
        static_cast<uint64_t>(j * s.dim + element<true>(base, kPerQuad * q)) >> 2);
  else {
    Normal4 e;
#pragma unroll
    for (int k = 0; k < kPerQuad; ++k) {
      const int64_t i = element<false>(base, kPerQuad * q + k);
      e.v[k] = i < s.dim ? philox_normal(s.noise_seed, s.noise_stream.base,
                                         static_cast<uint64_t>(j * s.dim + i))
                         : 0.0f;
    }
    return e;
  }
}
// Whether value r is inside dim; on the 16-byte path, its whole quad is.
template <bool kVec4>
__device__ __forceinline__ bool inside(const DiffusionLossShape& s, int64_t base, int r) {
  return element<kVec4>(base, kVec4 ? r / kPerQuad * kPerQuad : r) < s.dim;
}

// Per-block constants: the sample's coefficients, loads only (t[j], then the tables), so
// that nothing waits on them before it uses them.
struct SampleCoefs {
  float a, b;        // sqrt(abar_t), sqrt(1 - abar_t)
  float w_t;         // loss weight of the timestep
  float importance;  // the sample's importance weight, 1 without
};
__device__ __forceinline__ SampleCoefs coefs(const DiffusionLossTables<float>& tab, int64_t j) {
  const int t = tab.t[j];
  return {tab.sqrt_abar[t], tab.sqrt_one_minus_abar[t], tab.weight[t],
          tab.importance ? tab.importance[j] : 1.0f};
}
// The sample's weight in the batch mean, w_t * importance / n (a division: computed where it
// is used, after the arithmetic that does not need it).
__device__ __forceinline__ float batch_weight(const SampleCoefs& c, int64_t n) {
  return c.w_t * c.importance / static_cast<float>(n);
}

// The sample, and the first element of the chunk, a block of the 1-D grid owns.
struct BlockPlace {
  int64_t sample, base;
};
template <int kQuads>
__device__ __forceinline__ BlockPlace block_place(const DiffusionLossShape& s) {
  const int64_t chunks = (s.dim + chunk_elements<kQuads>() - 1) / chunk_elements<kQuads>();
  return {blockIdx.x / chunks, blockIdx.x % chunks * chunk_elements<kQuads>()};
}

// grid n x chunks: x_t = a x0 + b eps. The loads of x0 go out first, so they are in flight
// while the coefficients' loads and Philox's arithmetic run.
template <class X0, bool kVec4, int kQuads>
__global__ void corrupt_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                               const X0* x0, float* x_t) {
  constexpr int kValues = kPerQuad * kQuads;
  const DiffusionLossShape s = read_step_keys(keyed);
  const BlockPlace place = block_place<kQuads>(s);
  const int64_t j = place.sample, base = place.base;
  float x[kValues], out[kValues] = {};  // out past dim: never stored
  load_x0<X0, kVec4>(s, x0, j, base, mirrored(s, j), x);
  const SampleCoefs k = coefs(tab, j);
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    if (kVec4 && !inside<true>(s, base, kPerQuad * q)) break;  // and every later quad
    const Normal4 e = quad_eps<kVec4>(s, j, base, q);
#pragma unroll
    for (int v = 0; v < kPerQuad; ++v)
      out[kPerQuad * q + v] = corrupt_value(k.a, k.b, x[kPerQuad * q + v], e.v[v]);
  }
  store_values<kVec4>(x_t + j * s.dim, base, s.dim, out);
}

// grid n x chunks: dpred = scale (pred - target), partial[j][chunk] = sum (pred - target)^2.
// The loads of pred (and x0) go out first, as in the corruption.
template <class X0, bool kVec4, int kQuads>
__global__ void loss_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                            const float* pred, const X0* x0, float* dpred, float* partial) {
  constexpr int kValues = kPerQuad * kQuads;
  __shared__ float scratch[32];
  const DiffusionLossShape s = read_step_keys(keyed);
  const BlockPlace place = block_place<kQuads>(s);
  const int64_t j = place.sample, base = place.base;
  // p: pred, then in place pred - target, then dpred (a second array would cost 4 kQuads
  // registers); x: x0 for the x0 and v targets
  float p[kValues], x[kValues] = {};
  load_values<kVec4>(pred + j * s.dim, base, s.dim, p);
  if (s.target != DiffusionTarget::Epsilon) load_x0<X0, kVec4>(s, x0, j, base, mirrored(s, j), x);
  const SampleCoefs k = coefs(tab, j);
  float sq = 0.0f;
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    if (kVec4 && !inside<true>(s, base, kPerQuad * q)) break;
    const Normal4 e = quad_eps<kVec4>(s, j, base, q);
#pragma unroll
    for (int v = 0; v < kPerQuad; ++v) {
      const int r = kPerQuad * q + v;
      if (!kVec4 && !inside<false>(s, base, r)) continue;
      const float diff = p[r] - target_value(s.target, k.a, k.b, x[r], e.v[v]);
      p[r] = diff;
      sq += diff * diff;
    }
  }
  const float scale = grad_scale(batch_weight(k, s.n), s.dim);
#pragma unroll
  for (int r = 0; r < kValues; ++r) p[r] = scale * p[r];  // past dim: never stored
  store_values<kVec4>(dpred + j * s.dim, base, s.dim, p);
  sq = block_sum(sq, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sq;  // = partial[j][chunk]
}

// One block of kFinishThreads: warp w sums samples w, w + 32, ...: lane l adds the sample's
// chunks l, l + 32, ... in order and a fixed shuffle tree (warp_sum) adds the lanes, so a
// sample's partials are read 32 at a time. (A thread per sample, adding its chunks in turn,
// waited on ~chunks / 4 round trips to L2 with the compiler's unrolling: 192 chunks at
// 64x256x256x3 in the shallow mapping, several microseconds beside a loss kernel of tens.)
// Lane 0 adds its warp's contributions in sample order, and the block's fixed tree the
// warps': deterministic.
constexpr int kFinishThreads = 1024;  // 32 warps: block_sum's most
__global__ void finish_kernel(DiffusionLossShape keyed, DiffusionLossTables<float> tab,
                              int chunks, const float* partial, float* per_sample, float* loss) {
  __shared__ float scratch[32];
  const DiffusionLossShape s = read_step_keys(keyed);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float contribution = 0.0f;
  for (int64_t j = warp; j < s.n; j += warps) {
    float sq = 0.0f;
    for (int c = lane; c < chunks; c += 32) sq += partial[j * chunks + c];
    sq = warp_sum(sq);
    if (lane == 0) {
      const float mse = sq / static_cast<float>(s.dim);
      const SampleCoefs k = coefs(tab, j);
      per_sample[j] = k.w_t * mse;
      contribution += batch_weight(k, s.n) * mse;
    }
  }
  contribution = block_sum(contribution, scratch);
  if (threadIdx.x == 0) *loss = contribution;
}

// The 16-byte path needs whole quads per sample and 16-byte aligned rows: of every pointer
// it moves by 16 bytes (null: not read; a byte x0 is read element by element).
bool vec4_ok(const DiffusionLossShape& s, std::initializer_list<const void*> rows) {
  bool ok = s.dim % kPerQuad == 0;
  for (const void* r : rows) ok = ok && reinterpret_cast<uintptr_t>(r) % 16 == 0;
  return ok;
}
template <class X0>
const void* vec4_x0(const X0* x0) {
  return std::is_same_v<X0, float> ? x0 : nullptr;
}

// The n x chunks grid of a kQuads-deep mapping, and the kernel's launch on it for the
// mapping the shape gets (quads_for) and its path: kernel<kVec4, kQuads> as a functor
// template picks the instantiation.
template <int kQuads>
dim3 chunk_grid(const DiffusionLossShape& s) {
  const int64_t blocks = s.n * ((s.dim + chunk_elements<kQuads>() - 1) / chunk_elements<kQuads>());
  CHECK(blocks <= 2147483647, "diffusion loss: " << s.n << " samples of " << s.dim
                                                 << " values need more blocks than a grid has");
  return dim3(static_cast<unsigned>(blocks));
}
template <class Launch>
void launch_mapped(const DiffusionLossShape& s, bool vec4, Launch launch) {
  const bool deep = quads_for(s) == kDeepQuads;
  if (vec4 && deep) launch.template run<true, kDeepQuads>(chunk_grid<kDeepQuads>(s));
  else if (vec4) launch.template run<true, kShallowQuads>(chunk_grid<kShallowQuads>(s));
  else if (deep) launch.template run<false, kDeepQuads>(chunk_grid<kDeepQuads>(s));
  else launch.template run<false, kShallowQuads>(chunk_grid<kShallowQuads>(s));
}

// The two kernels' launches, for launch_mapped.
template <class X0>
struct CorruptLaunch {
  const DiffusionLossShape& s;
  const DiffusionLossTables<float>& tab;
  const X0* x0;
  float* x_t;
  template <bool kVec4, int kQuads>
  void run(dim3 grid) const {
    DDPM_LAUNCH((corrupt_kernel<X0, kVec4, kQuads>), grid, kThreads)(s, tab, x0, x_t);
  }
};
template <class X0>
struct LossLaunch {
  const DiffusionLossShape& s;
  const DiffusionLossTables<float>& tab;
  const float* pred;
  const X0* x0;
  float *dpred, *partial;
  template <bool kVec4, int kQuads>
  void run(dim3 grid) const {
    DDPM_LAUNCH((loss_kernel<X0, kVec4, kQuads>), grid, kThreads)(s, tab, pred, x0, dpred,
                                                                 partial);
  }
};

}  // namespace

int diffusion_loss_quads(const DiffusionLossShape& s) { return quads_for(s); }

int64_t loss_chunks(const DiffusionLossShape& s) {
  const int64_t chunk = kThreads * int64_t{kPerQuad} * quads_for(s);
  return (s.dim + chunk - 1) / chunk;
}

void set_diffusion_loss_quads(int quads) {
  CHECK(quads == 0 || quads == kShallowQuads || quads == kDeepQuads,
        "diffusion loss: " << quads << " quads a thread; the mappings are " << kShallowQuads
                           << " and " << kDeepQuads << " (0: by size)");
  forced_quads = quads;
}

template <class X0>
void diffusion_corrupt(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                       const X0* x0, float* x_t) {
  if (s.n * s.dim == 0) return;
  launch_mapped(s, vec4_ok(s, {x_t, vec4_x0(x0)}), CorruptLaunch<X0>{s, tab, x0, x_t});
}

template <class X0>
void diffusion_loss(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                    const float* pred, const X0* x0, float* dpred, float* per_sample,
                    float* loss, float* partial) {
  if (s.n * s.dim == 0) return;
  launch_mapped(s, vec4_ok(s, {pred, dpred, vec4_x0(x0)}),
                LossLaunch<X0>{s, tab, pred, x0, dpred, partial});
  DDPM_LAUNCH(finish_kernel, 1, kFinishThreads)(s, tab, static_cast<int>(loss_chunks(s)),
                                                partial, per_sample, loss);
}

template void diffusion_corrupt<float>(const DiffusionLossShape&,
                                       const DiffusionLossTables<float>&, const float*, float*);
template void diffusion_corrupt<uint8_t>(const DiffusionLossShape&,
                                         const DiffusionLossTables<float>&, const uint8_t*,
                                         float*);
template void diffusion_loss<float>(const DiffusionLossShape&, const DiffusionLossTables<float>&,
                                    const float*, const float*, float*, float*, float*, float*);
template void diffusion_loss<uint8_t>(const DiffusionLossShape&,
                                      const DiffusionLossTables<float>&, const float*,
                                      const uint8_t*, float*, float*, float*, float*);

}  // namespace ddpm::cuda
