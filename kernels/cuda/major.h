// Which dimension of a matrix product's operand is contiguous in memory: K-major (the
// reduction's k, as a row-major m x k matrix A or n x k matrix B: BLAS's "T" for B), or
// MN-major (m or n, as a row-major k x m or k x n: the wgrad's pixels-by-channels tensors).
// Hopper's wgmma reads either from shared memory (ptx_sm90.cuh); host code names the layout of
// gemm_bf16_sm90's operands with it (gemm_sm90.cuh).
#pragma once

namespace ddpm::cuda {

enum class Major { K, MN };

}  // namespace ddpm::cuda
