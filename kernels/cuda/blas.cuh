// cuBLAS for the kernels that hand a plain GEMM to it (DESIGN.md: cuBLAS may serve plain
// GEMMs): the linear layers (linear.cu) and the flash attention backward's dq
// (attention_flash_bf16_backward.cu). One handle per math mode, on the engine's stream. And
// cuBLASLt (a library of its own in the toolkit) for the products whose bias it adds in its
// epilogue (gemm_lt.cu): its entries, and one handle (its calls take the stream).
//
// cuBLAS is opened (dlopen) when the first product runs, not when the program starts: a
// loaded libcublas costs ~216 MB of resident memory (measured: a program that only links it
// peaks at 218 MB, 1.5 MB without), which every CPU-only run and `ddpm info` would otherwise
// pay. Under the CPU emulation the emulated cuBLAS is called directly.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

namespace ddpm::cuda::blas {

// cublasGemmEx and cublasGemmStridedBatchedEx with a cublasComputeType_t (C++ builds of
// cublas_api.h also declare the older overloads taking a cudaDataType there).
using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                  int, const void*, const void*, cudaDataType, int, const void*,
                                  cudaDataType, int, const void*, void*, cudaDataType, int,
                                  cublasComputeType_t, cublasGemmAlgo_t);
using GemmStridedBatchedEx = cublasStatus_t (*)(
    cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
    const void*, cudaDataType, int, long long, const void*, cudaDataType, int, long long,
    const void*, void*, cudaDataType, int, long long, int, cublasComputeType_t, cublasGemmAlgo_t);

struct Api {
  decltype(&cublasCreate) create;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSetStream) set_stream;
  decltype(&cublasSgemm) sgemm;
  GemmEx gemm_ex;
  GemmStridedBatchedEx gemm_strided_batched_ex;
};

// The library's entries, loaded on the first call; a clear error if it cannot be opened.
const Api& api();
// The handle for `math` (CUBLAS_DEFAULT_MATH or CUBLAS_TF32_TENSOR_OP_MATH), created on first
// use on the engine's stream (engine/cuda_stream.h).
cublasHandle_t handle(cublasMath_t math = CUBLAS_DEFAULT_MATH);

struct LtApi {
  decltype(&cublasLtCreate) create;
  decltype(&cublasLtMatmulDescCreate) desc_create;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set;
  decltype(&cublasLtMatrixLayoutCreate) layout_create;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
  decltype(&cublasLtMatmul) matmul;
};

// cuBLASLt's entries, loaded on the first call (libcublasLt, beside libcublas); a clear error
// if it cannot be opened.
const LtApi& lt_api();
cublasLtHandle_t lt_handle();

}  // namespace ddpm::cuda::blas
