// Column sums over a batch, deterministic and parallel: the bias gradient (dy summed over
// every N*H*W row, elementwise.cu) and group norm's dgamma and dbeta (group_norm.cu).
//
// The first version gave each column one thread that walked every row: a conv bias of 128
// channels at batch 128 and 32x32 is 128 threads summing 131,072 rows each, one SM busy and
// the rest idle, some 90 launches of it per training step. Here the rows are cut into
// chunks and the sum is done in two stages:
//   stage 1  block (column tile, row chunk, vector): 32 x 8 threads. Thread (tx, ty) adds
//            rows ty, ty + 8, ... of the chunk for column tx (a warp reads 32 consecutive
//            columns: coalesced); the 8 sums of a column are then added in order through
//            shared memory, giving partial[k][vector][chunk][column].
//   stage 2  one thread per output adds its chunks' partials in chunk order and
//            accumulates (+=) into the output, the tape's convention, or writes it
//            outright when the sum is a gradient's first contribution (GradWrite::Assign).
// Every sum runs in a fixed order (no atomics): the result is the same bits every run.
// Without a workspace the plan has one chunk and stage 1 accumulates into the output itself.
//
// What is summed is a functor Values: values(vector, row, col, v) writes the K numbers of
// element (row, col) of matrix `vector` into v[0..K). K = 1 for a bias, 2 for (dgamma, dbeta).
#pragma once

#include <cstdint>

#include "engine/check.h"
#include "kernels/cuda/column_sum_plan.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/grad_write.h"

namespace ddpm::cuda {

// grid (column tiles, chunks, vectors), kColumnTile * kRowLanes threads.
template <int K, class Values>
__global__ void __launch_bounds__(kColumnTile * kRowLanes)
column_partials_kernel(ColumnSumPlan p, Values values, float* partials, float* out0, float* out1,
                       bool add) {
  __shared__ float lanes[K][kRowLanes][kColumnTile];
  const int tx = threadIdx.x % kColumnTile, ty = threadIdx.x / kColumnTile;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + tx;
  const int64_t chunk = blockIdx.y, vec = blockIdx.z;
  const int64_t r0 = chunk * p.chunk_rows;
  const int64_t r1 = r0 + p.chunk_rows < p.rows ? r0 + p.chunk_rows : p.rows;
  float acc[K] = {};
  if (col < p.cols) {
    for (int64_t r = r0 + ty; r < r1; r += kRowLanes) {
      float v[K];
      values(vec, r, col, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
  }
  for (int k = 0; k < K; ++k) lanes[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty != 0 || col >= p.cols) return;
  for (int k = 0; k < K; ++k) {
    float sum = 0.0f;
    for (int lane = 0; lane < kRowLanes; ++lane) sum += lanes[k][lane][tx];
    if (p.chunks > 1) {
      partials[((k * p.vectors + vec) * p.chunks + chunk) * p.cols + col] = sum;
    } else {
      float* out = k == 0 ? out0 : out1;
      if (out) store_grad(out, vec * p.cols + col, sum, add);
    }
  }
}

// out_k[vec, col] (+)= sum over chunks of partial[k][vec][chunk][col], chunks in order.
template <int K>
__global__ void column_finish_kernel(ColumnSumPlan p, const float* partials, float* out0,
                                     float* out1, bool add) {
  DDPM_GRID_STRIDE(i, K * p.vectors * p.cols) {
    const int64_t k = i / (p.vectors * p.cols), vc = i % (p.vectors * p.cols);
    float* out = k == 0 ? out0 : out1;
    if (out == nullptr) continue;
    const float* part = partials + (k * p.vectors + vc / p.cols) * p.chunks * p.cols + vc % p.cols;
    float sum = 0.0f;
    for (int64_t c = 0; c < p.chunks; ++c) sum += part[c * p.cols];
    store_grad(out, vc, sum, add);
  }
}

// out0 (and out1 when K = 2) += the column sums (= with GradWrite::Assign). workspace:
// p.workspace_floats(K) floats (none when p has one chunk).
template <int K, class Values>
void column_sums(const ColumnSumPlan& p, Values values, float* workspace, float* out0,
                 float* out1 = nullptr, GradWrite write = GradWrite::Accumulate) {
  static_assert(K == 1 || K == 2, "one or two sums per element");
  if (p.vectors * p.cols == 0) return;
  CHECK(p.chunks == 1 || workspace != nullptr, "column sums over " << p.chunks
                                                   << " chunks need a workspace");
  CHECK(p.vectors <= 65535, "column sums: " << p.vectors << " vectors exceed the grid's z extent");
  const dim3 grid(static_cast<unsigned>((p.cols + kColumnTile - 1) / kColumnTile),
                  static_cast<unsigned>(p.chunks), static_cast<unsigned>(p.vectors));
  const bool add = write == GradWrite::Accumulate;
  DDPM_LAUNCH((column_partials_kernel<K, Values>), grid, kColumnTile * kRowLanes)(
      p, values, workspace, out0, out1, add);
  if (p.chunks > 1)
    DDPM_LAUNCH(column_finish_kernel<K>, grid_for(K * p.vectors * p.cols), kThreads)(
        p, workspace, out0, out1, add);
}

}  // namespace ddpm::cuda
