// D = A B + bias in one cuBLASLt call (gemm_lt.cuh): the plans, one per problem.
#include "kernels/cuda/gemm_lt.cuh"

#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>

#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/blas.cuh"

namespace ddpm::cuda::lt {

namespace {

bool g_on = true;

// The largest power of two (up to 256, cuBLASLt's default assumption) dividing the address:
// the heuristics are told each operand's, so no algorithm needing more is chosen.
uint32_t alignment(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

cudaDataType type_of(Operands o) { return o == Operands::Bf16 ? CUDA_R_16BF : CUDA_R_32F; }

// The descriptors and the algorithm of one problem; ok false where cuBLASLt has none.
struct Plan {
  bool ok = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// The pointers' alignments in bytes, a plan's alone: the heuristics are told A's, B's and
// D's; the bias has no preference of its own.
struct Alignments {
  uint32_t a, b, d, bias;
  auto tied() const { return std::tie(a, b, d, bias); }
};

using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t,
                       uint32_t>;

Plan make_plan(const BiasGemm& g, const Alignments& align) {
  const blas::LtApi& api = blas::lt_api();
  Plan p;
  const cublasComputeType_t compute =
      g.operands == Operands::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(api.desc_create(&p.desc, compute, CUDA_R_32F));
  const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  CUBLAS_CHECK(api.desc_set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  const cudaDataType d_type = g.d_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const int32_t bias_type = d_type;  // the bias is of D's type (the header says why)
  CUBLAS_CHECK(
      api.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  const cudaDataType in = type_of(g.operands);
  CUBLAS_CHECK(api.layout_create(&p.a, in, g.m, g.k, g.m));
  CUBLAS_CHECK(api.layout_create(&p.b, in, g.k, g.n, g.k));
  CUBLAS_CHECK(api.layout_create(&p.d, d_type, g.m, g.n, g.m));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(api.pref_create(&pref));
  const uint64_t no_workspace = 0;
  CUBLAS_CHECK(api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &no_workspace,
                            sizeof no_workspace));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align.a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align.b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align.d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align.d}};
  for (const auto& [attr, bytes] : aligns)
    CUBLAS_CHECK(api.pref_set(pref, attr, &bytes, sizeof bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // a status other than success is "no algorithm" here (cuBLASLt says NOT_SUPPORTED for a
  // combination it lacks), which the caller's fallback covers
  const cublasStatus_t s =
      api.heuristic(blas::lt_handle(), p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  CUBLAS_CHECK(api.pref_destroy(pref));
  // the bias's own alignment has no preference: below 16 bytes, the two-pass path
  p.ok = s == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
         result.workspaceSize == 0 && align.bias >= 16;
  p.algo = result.algo;
  if (!p.ok)  // once per problem: each is planned once
    std::printf("linear: cuBLASLt has no algorithm adding the bias in its epilogue for M %lld "
                "K %lld N %lld (%s operands, %s output, bias aligned to %u bytes); the GEMM, "
                "then the bias pass\n",
                static_cast<long long>(g.n), static_cast<long long>(g.k),
                static_cast<long long>(g.m),
                g.operands == Operands::Bf16   ? "bf16"
                : g.operands == Operands::Tf32 ? "TF32"
                                               : "fp32",
                g.d_bf16 ? "bf16" : "fp32", align.bias);
  return p;
}

}  // namespace

void set_bias_epilogue(bool on) { g_on = on; }
bool bias_epilogue() { return g_on; }

bool gemm_bias(const BiasGemm& g, const void* a, const void* b, const void* bias, void* d) {
  if (!g_on) return false;
  static std::mutex mutex;
  // Never destroyed, as cuDNN's plans (conv2d_cudnn_plan.cu): the descriptors must outlive
  // every use, and at exit cuBLASLt may already be unloaded.
  static auto& plans = *new std::map<Key, Plan>();
  const Alignments align{alignment(a), alignment(b), alignment(d), alignment(bias)};
  const Key key = std::tuple_cat(std::make_tuple(g.m, g.n, g.k, static_cast<int>(g.operands),
                                                 g.d_bf16),
                                 align.tied());
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(g, align)).first;
  const Plan& p = it->second;
  if (!p.ok) return false;
  const blas::LtApi& api = blas::lt_api();
  CUBLAS_CHECK(api.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(api.matmul(blas::lt_handle(), p.desc, &one, a, p.a, b, p.b, &zero, d, p.d, d, p.d,
                          &p.algo, nullptr, 0, engine_stream()));
  return true;
}

}  // namespace ddpm::cuda::lt
