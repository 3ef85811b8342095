#include "kernels/cpu_fast/gemm.h"

#include <cblas.h>
#include <dnnl.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace ddpm::cpu_fast {

namespace {
std::atomic<GemmLibrary> g_library{GemmLibrary::OneDnn};
}  // namespace

void set_gemm_library(GemmLibrary library) { g_library = library; }
GemmLibrary gemm_library() { return g_library; }

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (g_library == GemmLibrary::OpenBlas) {
    const auto i = [](int64_t v) { return static_cast<int>(v); };  // the model's sizes fit
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, i(m), i(n), i(k), alpha, a, i(lda), b,
                i(ldb), beta, c, i(ldc));
    return;
  }
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k,
                                          alpha, a, lda, b, ldb, beta, c, ldc);
  // (this library sits below engine/check.h's: its errors are the standard ones, as oneDNN's)
  if (status != dnnl_success)
    throw std::runtime_error("oneDNN's sgemm of " + std::to_string(m) + " x " +
                             std::to_string(k) + " by " + std::to_string(k) + " x " +
                             std::to_string(n) + " failed (dnnl status " +
                             std::to_string(static_cast<int>(status)) + ")");
}

}  // namespace ddpm::cpu_fast
