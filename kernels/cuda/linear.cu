// y (M, N) = x (M, K) w (K, N) + b (N) with cuBLAS.
//
// cuBLAS is column-major; a row-major (r x c) matrix is the column-major (c x r) matrix of
// its transpose, so every product is computed transposed with no copies:
//   y^T  = w^T x^T          gemm(N, N, m=N, n=M, k=K, A = w (ld N), B = x (ld K))
//   dx^T = w dy^T           gemm(T, N, m=K, n=M, k=N, A = w (ld N), B = dy (ld N)), beta 1
//   dw^T = dy^T x           gemm(N, T, m=N, n=K, k=M, A = dy (ld N), B = x (ld K)), beta 1
// The bias is added, and its gradient summed, by the broadcast kernels of elementwise.cu.
// fp32 math (cuBLAS's default CUBLAS_DEFAULT_MATH: no TF32), one handle on the default stream.
#include "engine/cuda_check.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/linear.cuh"

namespace ddpm::cuda {

namespace {

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    CUBLAS_CHECK(cublasCreate(&created));
    CUBLAS_CHECK(cublasSetMathMode(created, CUBLAS_DEFAULT_MATH));
    return created;
  }();
  return h;
}

}  // namespace

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y) {
  if (s.m == 0 || s.n == 0) return;
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(handle(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(s.n),
                           static_cast<int>(s.m), static_cast<int>(s.k), &one, w,
                           static_cast<int>(s.n), x, static_cast<int>(s.k), &zero, y,
                           static_cast<int>(s.n)));
  if (b) broadcast_add_forward(BroadcastShape{1, s.m, s.n, false}, y, b, y);
}

int64_t linear_backward_workspace(const LinearShape& s) {
  return broadcast_add_backward_workspace(BroadcastShape{1, s.m, s.n, false});
}

void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace) {
  if (s.m == 0 || s.n == 0) return;
  const float one = 1.0f;
  if (dx)
    CUBLAS_CHECK(cublasSgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.k),
                             static_cast<int>(s.m), static_cast<int>(s.n), &one, w,
                             static_cast<int>(s.n), dy, static_cast<int>(s.n), &one, dx,
                             static_cast<int>(s.k)));
  if (dw)
    CUBLAS_CHECK(cublasSgemm(handle(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(s.n),
                             static_cast<int>(s.k), static_cast<int>(s.m), &one, dy,
                             static_cast<int>(s.n), x, static_cast<int>(s.k), &one, dw,
                             static_cast<int>(s.n)));
  if (db) broadcast_add_backward(BroadcastShape{1, s.m, s.n, false}, dy, db, workspace);
}

}  // namespace ddpm::cuda
