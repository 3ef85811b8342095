#include "tests/cuda_emulation/cublaslt.h"

#include <cstring>

#include "tests/cuda_emulation/column_major_gemm.h"

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // -1: D's type
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {};  // its attributes checked, none changes the answer

namespace {

bool g_find_none = false;    // cuda_emu::cublaslt_find_no_algorithm
int64_t g_matmuls = 0;       // cuda_emu::cublaslt_matmuls
constexpr uint64_t kAlgoTag = 0x4c74416c676fULL;  // "LtAlgo": this emulation's algorithms

// The problem an algorithm was found for, packed into its opaque words, so that a matmul
// with another problem's algorithm is refused.
void describe(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t& a,
              const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& dd,
              uint64_t out[8]) {
  out[0] = kAlgoTag;
  out[1] = static_cast<uint64_t>(d.compute) | static_cast<uint64_t>(d.transa) << 8 |
           static_cast<uint64_t>(d.transb) << 16 | static_cast<uint64_t>(d.epilogue) << 24 |
           static_cast<uint64_t>(static_cast<uint32_t>(d.bias_type)) << 32;
  out[2] = static_cast<uint64_t>(a.type) | static_cast<uint64_t>(dd.type) << 8;
  out[3] = a.rows;
  out[4] = a.cols;
  out[5] = b.cols;
  out[6] = static_cast<uint64_t>(a.ld) ^ static_cast<uint64_t>(b.ld) << 21 ^
           static_cast<uint64_t>(dd.ld) << 42;
  out[7] = 0;
}

// The documented combinations (cublaslt.h's list); SUCCESS or NOT_SUPPORTED / INVALID_VALUE.
cublasStatus_t check(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t& a,
                     const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& c,
                     const cublasLtMatrixLayoutOpaque_t& dd) {
  const uint64_t m = d.transa == CUBLAS_OP_N ? a.rows : a.cols;
  const uint64_t k = d.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t kb = d.transb == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t n = d.transb == CUBLAS_OP_N ? b.cols : b.rows;
  if (k != kb || dd.rows != m || dd.cols != n || c.rows != dd.rows || c.cols != dd.cols ||
      c.ld != dd.ld)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (a.type != b.type || c.type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool fp32 = a.type == CUDA_R_32F, bf16 = a.type == CUDA_R_16BF;
  const bool compute_ok = d.compute == CUBLAS_COMPUTE_32F ||
                          (fp32 && d.compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  const bool out_ok = dd.type == CUDA_R_32F || (bf16 && dd.type == CUDA_R_16BF);
  if (!(fp32 || bf16) || !compute_ok || !out_ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && d.epilogue != CUBLASLT_EPILOGUE_BIAS)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && d.bias_type != -1 &&
      d.bias_type != static_cast<int32_t>(dd.type))
    return CUBLAS_STATUS_NOT_SUPPORTED;  // the bias is of D's type
  return CUBLAS_STATUS_SUCCESS;
}

template <class T, class O>
cublasStatus_t run(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t& a,
                   const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& dd,
                   float alpha, const void* A, const void* B, float beta, void* D,
                   cudaStream_t stream) {
  const int m = static_cast<int>(dd.rows), n = static_cast<int>(dd.cols);
  const int k = static_cast<int>(d.transa == CUBLAS_OP_N ? a.cols : a.rows);
  const O* bias = d.epilogue == CUBLASLT_EPILOGUE_BIAS ? static_cast<const O*>(d.bias) : nullptr;
  return cuda_emu::gemm_detail::gemm(stream, d.transa, d.transb, m, n, k, alpha,
                                     static_cast<const T*>(A), static_cast<int>(a.ld),
                                     static_cast<const T*>(B), static_cast<int>(b.ld), beta,
                                     static_cast<O*>(D), static_cast<int>(dd.ld), bias);
}

}  // namespace

void cuda_emu::cublaslt_find_no_algorithm(bool none) { g_find_none = none; }
int64_t cuda_emu::cublaslt_matmuls() { return g_matmuls; }

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                        cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  if (scaleType != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cublasLtMatmulDescOpaque_t{computeType};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t sizeInBytes) {
  if (desc == nullptr || buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  const auto read = [&](auto& field) {
    if (sizeInBytes != sizeof(field)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&field, buf, sizeof(field));
    return CUBLAS_STATUS_SUCCESS;
  };
  int32_t op = 0;
  cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      s = read(op);
      if (s != CUBLAS_STATUS_SUCCESS || (op != CUBLAS_OP_N && op != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->transa : desc->transb) =
          static_cast<cublasOperation_t>(op);
      return s;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return read(desc->epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return read(desc->bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return read(desc->bias_type);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  // column-major: the leading dimension covers the rows
  if (ld < 1 || static_cast<uint64_t>(ld) < rows || rows > INT32_MAX || cols > INT32_MAX)
    return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t sizeInBytes) {
  if (pref == nullptr || buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  // the emulated algorithm needs no workspace and runs at any alignment of its element
  // type, so only the sizes are checked
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
    return sizeInBytes == sizeof(uint64_t) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  const bool alignment = attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
                         attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES;
  return alignment && sizeInBytes == sizeof(uint32_t) ? CUBLAS_STATUS_SUCCESS
                                                      : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!operationDesc || !Adesc || !Bdesc || !Cdesc || !Ddesc || !preference ||
      requestedAlgoCount < 1 || !heuristicResultsArray || !returnAlgoCount)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returnAlgoCount = 0;
  const cublasStatus_t s = check(*operationDesc, *Adesc, *Bdesc, *Cdesc, *Ddesc);
  if (s == CUBLAS_STATUS_INVALID_VALUE) return s;
  if (s != CUBLAS_STATUS_SUCCESS || g_find_none) return CUBLAS_STATUS_NOT_SUPPORTED;
  cublasLtMatmulHeuristicResult_t& r = heuristicResultsArray[0];
  r = cublasLtMatmulHeuristicResult_t{};
  describe(*operationDesc, *Adesc, *Bdesc, *Ddesc, r.algo.data);
  r.workspaceSize = 0;
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t computeDesc,
                              const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                              const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo,
                              void* /*workspace*/, size_t /*workspaceSizeInBytes*/,
                              cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!computeDesc || !Adesc || !Bdesc || !Cdesc || !Ddesc || !alpha || !beta || !algo)
    return CUBLAS_STATUS_INVALID_VALUE;
  const cublasLtMatmulDescOpaque_t& d = *computeDesc;
  if (check(d, *Adesc, *Bdesc, *Cdesc, *Ddesc) != CUBLAS_STATUS_SUCCESS)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  uint64_t expected[8];
  describe(d, *Adesc, *Bdesc, *Ddesc, expected);
  if (std::memcmp(expected, algo->data, sizeof expected) != 0 || C != D)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && d.bias == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  cublasStatus_t s;
  if (Adesc->type == CUDA_R_32F)
    s = run<float, float>(d, *Adesc, *Bdesc, *Ddesc, a, A, B, b, D, stream);
  else if (Ddesc->type == CUDA_R_32F)
    s = run<uint16_t, float>(d, *Adesc, *Bdesc, *Ddesc, a, A, B, b, D, stream);
  else
    s = run<uint16_t, uint16_t>(d, *Adesc, *Bdesc, *Ddesc, a, A, B, b, D, stream);
  if (s == CUBLAS_STATUS_SUCCESS) ++g_matmuls;
  return s;
}
