// How the column sums of column_sum.cuh cut a batch's rows into chunks: plain C++, so host
// code (op entries sizing the workspace, tests) can read the plan without the CUDA headers.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ddpm::cuda {

constexpr int kColumnTile = 32;        // a warp's worth of consecutive columns
constexpr int kRowLanes = 8;           // 8 warps per block: 256 threads
constexpr int kMaxRowChunks = 128;     // with 4 column tiles, 512 blocks: ~4 per SM of an H100
constexpr int64_t kMinChunkRows = 64;  // 8 rows per thread at least, to amortise the tree

struct ColumnSumPlan {
  int64_t vectors = 1, rows = 0, cols = 0;
  int64_t chunks = 1, chunk_rows = 0;
  // floats of workspace for K sums per element (0 when there is one chunk)
  int64_t workspace_floats(int k) const { return chunks > 1 ? k * vectors * chunks * cols : 0; }
};

// With a workspace in mind: up to kMaxRowChunks chunks of at least kMinChunkRows rows.
inline ColumnSumPlan plan_column_sums(int64_t vectors, int64_t rows, int64_t cols,
                                      bool with_workspace = true) {
  ColumnSumPlan p{vectors, rows, cols, 1, std::max<int64_t>(rows, 1)};
  if (with_workspace && rows > kMinChunkRows) {
    p.chunk_rows = std::max(kMinChunkRows, (rows + kMaxRowChunks - 1) / kMaxRowChunks);
    p.chunks = (rows + p.chunk_rows - 1) / p.chunk_rows;
  }
  return p;
}

}  // namespace ddpm::cuda
