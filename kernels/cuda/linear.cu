// y (M, N) = x (M, K) w (K, N) + b (N) with cuBLAS.
//
// cuBLAS is column-major; a row-major (r x c) matrix is the column-major (c x r) matrix of
// its transpose, so every product is computed transposed with no copies:
//   y^T  = w^T x^T          gemm(N, N, m=N, n=M, k=K, A = w (ld N), B = x (ld K))
//   dx^T = w dy^T           gemm(T, N, m=K, n=M, k=N, A = w (ld N), B = dy (ld N)), beta 1
//                           (0 when dx is written outright: kernels/grad_write.h)
//   dw^T = dy^T x           gemm(N, T, m=N, n=K, k=M, A = dy (ld N), B = x (ld K)), beta 1
// The bias is added in cuBLASLt's epilogue (gemm_lt.cuh: one product, y stored once), and
// where cuBLASLt has no algorithm for the problem by a pass after the product (the broadcast
// kernel of elementwise.cu, or on bf16 activations row_adds.cuh's, which rounds y once); its
// gradient is summed by the broadcast kernels. cuBLASLt takes the bias in y's type, so on
// bf16 activations y = bf16(sum + bf16(b)): the bias read, like w, from its bf16 copy.
//
// Three kinds of operands, the same three products:
//   fp32   SGEMM with cuBLAS's default math (CUBLAS_DEFAULT_MATH: no TF32);
//   TF32   SGEMM with CUBLAS_TF32_TENSOR_OP_MATH on operands the caller rounded to TF32
//          (engine precision tf32): tensor cores convert them to TF32 exactly, the products
//          are exact in fp32 and summed in fp32;
//   bf16   cublasGemmEx on bf16 copies of the operands (converted into the caller's
//          workspace, rounded to nearest even as kernels/bf16.h does), fp32 accumulation and
//          output (CUBLAS_COMPUTE_32F): products of bf16 values are exact in fp32, so the
//          result is the SGEMM of the rounded operands up to the order of the sums, at bf16
//          tensor-core speed, and the CPU's bf16 path (rounded operands, fp32 math) is its
//          reference. With bf16 activations end to end the conversions go away.
// cuBLAS, cuBLASLt and their handles (opened on first use): kernels/cuda/blas.cuh.
#include <string>

#include "engine/cuda_check.h"
#include "kernels/cuda/blas.cuh"
#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm_lt.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear.cuh"
#include "kernels/cuda/row_adds.cuh"
#include "kernels/cuda/storage.cuh"

namespace ddpm::cuda {

namespace {

using Operands = lt::Operands;  // fp32, TF32-rounded fp32, bf16: one enum for both libraries

// C (m x n, column-major) = op(A) op(B) + beta C; A and B fp32 or bf16 bits; C fp32, or
// with bf16 operands bf16 bits (c_type CUDA_R_16BF: the fp32 sum plus beta float(C), rounded
// once as it is stored).
void gemm(Operands kind, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
          int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb, float beta, void* c,
          int64_t ldc, cudaDataType c_type = CUDA_R_32F) {
  const float one = 1.0f;
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  if (kind == Operands::Bf16) {
    CUBLAS_CHECK(blas::api().gemm_ex(blas::handle(), ta, tb, i(m), i(n), i(k), &one, a,
                                     CUDA_R_16BF, i(lda), b, CUDA_R_16BF, i(ldb), &beta, c,
                                     c_type, i(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  CHECK(c_type == CUDA_R_32F, "linear: an fp32 or TF32 product stores fp32");
  CUBLAS_CHECK(blas::api().sgemm(
      blas::handle(kind == Operands::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), ta,
      tb, i(m), i(n), i(k), &one, static_cast<const float*>(a), i(lda), static_cast<const float*>(b),
      i(ldb), &beta, static_cast<float*>(c), i(ldc)));
}

// The three products of the layer (the header's table), for operands of one kind.
void forward_product(Operands kind, const LinearShape& s, const void* x, const void* w, float* y) {
  gemm(kind, CUBLAS_OP_N, CUBLAS_OP_N, s.n, s.m, s.k, w, s.n, x, s.k, 0.0f, y, s.n);
}

// dx and dw accumulate (beta 1); dx_beta 0 overwrites dx instead.
void backward_products(Operands kind, const LinearShape& s, const void* x, const void* w,
                       const void* dy, float* dx, float* dw, float dx_beta = 1.0f) {
  if (dx) gemm(kind, CUBLAS_OP_T, CUBLAS_OP_N, s.k, s.m, s.n, w, s.n, dy, s.n, dx_beta, dx, s.k);
  if (dw) gemm(kind, CUBLAS_OP_N, CUBLAS_OP_T, s.n, s.k, s.m, dy, s.n, x, s.k, 1.0f, dw, s.n);
}

// Carves bf16 copies out of a float workspace, each 16-byte aligned (tensor-core loads).
struct Bf16Workspace {
  uint16_t* next;
  static int64_t floats(int64_t elements) { return (elements + 7) / 8 * 4; }
  const uint16_t* convert(const float* x, int64_t n) {
    uint16_t* out = next;
    to_bf16_bits(n, x, out);  // elementwise.cuh
    next += floats(n) * 2;
    return out;
  }
  // The weights' bf16 copy when the caller has one (engine/weight_copy.h), else converted.
  const uint16_t* weights(const float* w, const uint16_t* w_bf16, int64_t n) {
    return w_bf16 ? w_bf16 : convert(w, n);
  }
};

BroadcastShape bias_shape(const LinearShape& s) { return BroadcastShape{1, s.m, s.n, false}; }

int64_t padded(int64_t floats) { return (floats + 3) / 4 * 4; }  // to 16 bytes

// y^T = w^T x^T + b, the bias in cuBLASLt's epilogue (gemm_lt.cuh), y and b of one type (fp32,
// or bf16 bits with y_bf16); false, having run nothing, where cuBLASLt has no algorithm.
bool with_bias(Operands kind, const LinearShape& s, const void* x, const void* w, const void* b,
               void* y, bool y_bf16 = false) {
  return lt::gemm_bias(lt::BiasGemm{s.n, s.m, s.k, kind, y_bf16}, w, x, b, y);
}

}  // namespace

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y,
                    bool tf32) {
  if (s.m == 0 || s.n == 0) return;
  const Operands kind = tf32 ? Operands::Tf32 : Operands::F32;
  if (b && with_bias(kind, s, x, w, b, y)) return;
  forward_product(kind, s, x, w, y);
  if (b) broadcast_add_forward(bias_shape(s), y, b, y);
}

int64_t linear_backward_workspace(const LinearShape& s) {
  return broadcast_add_backward_workspace(bias_shape(s));
}

namespace {
// cuBLAS's beta for dx: 0 (C is not read) when dx is written outright.
float dx_beta(GradWrite write) { return write == GradWrite::Assign ? 0.0f : 1.0f; }
}  // namespace

void linear_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace, bool tf32,
                     GradWrite dx_write) {
  if (s.m == 0 || s.n == 0) return;
  backward_products(tf32 ? Operands::Tf32 : Operands::F32, s, x, w, dy, dx, dw,
                    dx_beta(dx_write));
  if (db) broadcast_add_backward(bias_shape(s), dy, db, workspace);
}

int64_t linear_bf16_forward_workspace(const LinearShape& s) {
  return Bf16Workspace::floats(s.m * s.k) + Bf16Workspace::floats(s.k * s.n);
}

void linear_bf16_forward(const LinearShape& s, const float* x, const float* w, const float* b,
                         float* y, float* workspace, const uint16_t* w_bf16) {
  if (s.m == 0 || s.n == 0) return;
  Bf16Workspace ws{reinterpret_cast<uint16_t*>(workspace)};
  const uint16_t* xb = ws.convert(x, s.m * s.k);
  const uint16_t* wb = ws.weights(w, w_bf16, s.k * s.n);
  if (b && with_bias(Operands::Bf16, s, xb, wb, b, y)) return;
  forward_product(Operands::Bf16, s, xb, wb, y);
  if (b) broadcast_add_forward(bias_shape(s), y, b, y);
}

int64_t linear_bf16_backward_workspace(const LinearShape& s) {
  return Bf16Workspace::floats(s.m * s.k) + Bf16Workspace::floats(s.k * s.n) +
         Bf16Workspace::floats(s.m * s.n) + linear_backward_workspace(s);
}

void linear_bf16_backward(const LinearShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db, float* workspace,
                          const uint16_t* w_bf16, GradWrite dx_write) {
  if (s.m == 0 || s.n == 0) return;
  Bf16Workspace ws{reinterpret_cast<uint16_t*>(workspace)};
  const uint16_t* xb = dw ? ws.convert(x, s.m * s.k) : nullptr;
  const uint16_t* wb = dx ? ws.weights(w, w_bf16, s.k * s.n) : nullptr;
  const uint16_t* dyb = dx || dw ? ws.convert(dy, s.m * s.n) : nullptr;
  backward_products(Operands::Bf16, s, xb, wb, dyb, dx, dw, dx_beta(dx_write));
  // the bias gradient sums the fp32 dy (it is no product), in the workspace after the copies
  // (if it needs any: a pointer past the end of the workspace is never passed on)
  if (db)
    broadcast_add_backward(bias_shape(s), dy, db,
                           linear_backward_workspace(s) > 0 ? reinterpret_cast<float*>(ws.next)
                                                            : nullptr);
}

int64_t linear_bf16_activations_forward_workspace(const LinearShape& s) {
  return Bf16Workspace::floats(s.k * s.n) + Bf16Workspace::floats(s.n) + padded(s.n) + s.m * s.n;
}

void linear_bf16_forward(const LinearShape& s, const uint16_t* x, const float* w, const float* b,
                         uint16_t* y, float* workspace, const uint16_t* w_bf16,
                         const uint16_t* b_bf16) {
  if (s.m == 0 || s.n == 0) return;
  Bf16Workspace ws{reinterpret_cast<uint16_t*>(workspace)};
  const uint16_t* wb = ws.weights(w, w_bf16, s.k * s.n);
  if (!b) {  // y = bf16(sum), rounded by cuBLAS as it stores
    gemm(Operands::Bf16, CUBLAS_OP_N, CUBLAS_OP_N, s.n, s.m, s.k, wb, s.n, x, s.k, 0.0f, y, s.n,
         CUDA_R_16BF);
    return;
  }
  // y = bf16(sum + float(bf16(b))): in cuBLASLt's epilogue, which takes a bias of y's type
  const uint16_t* bb = ws.weights(b, b_bf16, s.n);
  if (with_bias(Operands::Bf16, s, x, wb, bb, y, /*y_bf16=*/true)) return;
  // else the same sums in two passes: the fp32 product, then the add and the one rounding
  // (row_adds.cuh), with the bias widened back from its bf16 value
  float* const bias = reinterpret_cast<float*>(ws.next);
  float* const acc = bias + padded(s.n);  // 16-byte aligned, as row_adds' runs want
  from_bf16_bits(s.n, bb, bias);  // cast.cuh
  forward_product(Operands::Bf16, s, x, wb, acc);
  add_to_rows(s.m, s.n, 1, acc, bias, nullptr, static_cast<const uint16_t*>(nullptr), y);
}

int64_t linear_bf16_activations_backward_workspace(const LinearShape& s) {
  return Bf16Workspace::floats(s.k * s.n) + linear_backward_workspace(s);
}

void linear_bf16_backward(const LinearShape& s, const uint16_t* x, const float* w,
                          const uint16_t* dy, uint16_t* dx, float* dw, float* db,
                          float* workspace, const uint16_t* w_bf16, GradWrite dx_write) {
  if (s.m == 0 || s.n == 0) return;
  Bf16Workspace ws{reinterpret_cast<uint16_t*>(workspace)};
  const uint16_t* wb = dx ? ws.weights(w, w_bf16, s.k * s.n) : nullptr;
  float* const sums = reinterpret_cast<float*>(ws.next);  // the bias gradient's column sums
  // dx (m, k) = bf16(acc + float(dx)), or bf16(acc) when written outright: cuBLAS sums the
  // products in fp32, adds the earlier gradient (beta 1) and rounds once as it stores, where
  // an fp32 (m, k) product and a pass over it (read, convert, store) did the same in three
  // trips through memory
  if (dx)
    gemm(Operands::Bf16, CUBLAS_OP_T, CUBLAS_OP_N, s.k, s.m, s.n, wb, s.n, dy, s.n,
         dx_beta(dx_write), dx, s.k, CUDA_R_16BF);
  if (dw) backward_products(Operands::Bf16, s, x, nullptr, dy, nullptr, dw);
  if (db)
    broadcast_add_backward(bias_shape(s), dy, db, linear_backward_workspace(s) > 0 ? sums : nullptr);
}

}  // namespace ddpm::cuda
