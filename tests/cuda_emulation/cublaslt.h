// cuBLASLt, emulated: what kernels/cuda/gemm_lt.cu calls for a product with its bias added in
// the library's epilogue (the engine's linear layers, kernels/cuda/linear.cu): a handle,
// operation and matrix-layout descriptors, a preference, the heuristic query, and the matmul.
//
// What is emulated is cuBLASLt's documented contract (cublasLt.h), not its speed:
//   - D (rows x cols, column-major) = alpha op(A) op(B) + beta C (+ bias per row under
//     CUBLASLT_EPILOGUE_BIAS), computed as column_major_gemm.h does: the sums in double,
//     rounded to float, the bias added in fp32, stored once in D's type;
//   - types: A and B both CUDA_R_32F (CUBLAS_COMPUTE_32F, or _FAST_TF32, whose rounding is
//     not emulated: the engine hands operands already rounded to TF32) or both CUDA_R_16BF
//     (CUBLAS_COMPUTE_32F); C and D of one type, fp32, or bf16 with bf16 operands; fp32
//     scale. The bias's type is D's: CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE may name D's type
//     and nothing else (cublasLt.h: "Bias vector elements are the same type as the elements
//     of output matrix (Dtype)", the exceptions being integer and fp8 kernels), so the
//     heuristics find no algorithm for an fp32 bias on a bf16 D;
//   - C must be D (the same pointer and layout: what the engine asks for);
//   - the heuristics return one algorithm that needs no workspace, or none (the state
//     CUBLAS_STATUS_NOT_SUPPORTED) for an unsupported combination, and for every problem
//     after cuda_emu::cublaslt_find_no_algorithm(true), so the engine's fallback is tested;
//   - a matmul with an algorithm the heuristics did not give for its descriptors is
//     CUBLAS_STATUS_INVALID_VALUE; with a buffer that is not device memory (the bias too, m
//     elements), CUBLAS_STATUS_EXECUTION_FAILED;
//   - calls on a captured stream are recorded and run by each launch of the graph.
// The enum values are cuBLASLt 13's.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tests/cuda_emulation/cublas.h"

namespace cuda_emu {
// From now on (true) the heuristics find no algorithm for any problem; false: as documented.
void cublaslt_find_no_algorithm(bool none);
// The cublasLtMatmul calls that ran (or were captured) since the program started.
int64_t cublaslt_matmuls();
}  // namespace cuda_emu

enum cublasLtMatmulDescAttributes_t {
  CUBLASLT_MATMUL_DESC_TRANSA = 3,
  CUBLASLT_MATMUL_DESC_TRANSB = 4,
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
  CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,
};
enum cublasLtEpilogue_t { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 };
enum cublasLtMatmulPreferenceAttributes_t {
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
};

struct cublasLtContext;
struct cublasLtMatmulDescOpaque_t;
struct cublasLtMatrixLayoutOpaque_t;
struct cublasLtMatmulPreferenceOpaque_t;
using cublasLtHandle_t = cublasLtContext*;
using cublasLtMatmulDesc_t = cublasLtMatmulDescOpaque_t*;
using cublasLtMatrixLayout_t = cublasLtMatrixLayoutOpaque_t*;
using cublasLtMatmulPreference_t = cublasLtMatmulPreferenceOpaque_t*;
struct cublasLtMatmulAlgo_t {
  uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                        cublasComputeType_t computeType,
                                        cudaDataType_t scaleType);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
// TRANSA / TRANSB: int32_t; EPILOGUE: uint32_t; BIAS_POINTER: a pointer; BIAS_DATA_TYPE:
// int32_t (-1: D's type). Another attribute or size: CUBLAS_STATUS_INVALID_VALUE.
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t sizeInBytes);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
// MAX_WORKSPACE_BYTES: uint64_t; MIN_ALIGNMENT_*_BYTES: uint32_t.
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t sizeInBytes);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t computeDesc,
                              const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                              const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo,
                              void* workspace, size_t workspaceSizeInBytes, cudaStream_t stream);
