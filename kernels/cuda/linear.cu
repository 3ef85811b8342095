// y (M, N) = x (M, K) w (K, N) + b (N) with cuBLAS.
//
// cuBLAS is column-major; a row-major (r x c) matrix is the column-major (c x r) matrix of
// its transpose, so every product is computed transposed with no copies:
//   y^T  = w^T x^T          gemm(N, N, m=N, n=M, k=K, A = w (ld N), B = x (ld K))
//   dx^T = w dy^T           gemm(T, N, m=K, n=M, k=N, A = w (ld N), B = dy (ld N)), beta 1
//   dw^T = dy^T x           gemm(N, T, m=N, n=K, k=M, A = dy (ld N), B = x (ld K)), beta 1
// The bias is added, and its gradient summed, by the broadcast kernels of elementwise.cu.
// fp32 math (cuBLAS's default CUBLAS_DEFAULT_MATH: no TF32), one handle on the default stream.
//
// cuBLAS is opened (dlopen) when the first CUDA linear layer runs, not when the program
// starts: a loaded libcublas costs ~216 MB of resident memory (measured: a program that
// only links it peaks at 218 MB, 1.5 MB without), which every CPU-only run and `ddpm info`
// would otherwise pay. Under the CPU emulation the emulated cuBLAS is called directly.
#if !DDPM_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include <string>

#include "engine/cuda_check.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/linear.cuh"

namespace ddpm::cuda {

namespace {

struct Cublas {
  decltype(&cublasCreate) create;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSgemm) sgemm;
};

const Cublas& cublas() {
  static const Cublas api = [] {
#if DDPM_CUDA_EMULATION
    return Cublas{&cublasCreate, &cublasSetMathMode, &cublasSgemm};
#else
    const std::string soname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef DDPM_CUDA_LIBRARY_DIR
    if (lib == nullptr) lib = dlopen((DDPM_CUDA_LIBRARY_DIR "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    CHECK(lib != nullptr, "the CUDA linear layers need cuBLAS: cannot load " << soname << ": "
                                                                              << dlerror());
    auto symbol = [&](const char* name) {
      void* p = dlsym(lib, name);
      CHECK(p != nullptr, "cuBLAS (" << soname << ") has no " << name);
      return p;
    };
    return Cublas{reinterpret_cast<decltype(&cublasCreate)>(symbol("cublasCreate_v2")),
                  reinterpret_cast<decltype(&cublasSetMathMode)>(symbol("cublasSetMathMode")),
                  reinterpret_cast<decltype(&cublasSgemm)>(symbol("cublasSgemm_v2"))};
#endif
  }();
  return api;
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    CUBLAS_CHECK(cublas().create(&created));
    CUBLAS_CHECK(cublas().set_math_mode(created, CUBLAS_DEFAULT_MATH));
    return created;
  }();
  return h;
}

}  // namespace

void linear_forward(const LinearShape& s, const float* x, const float* w, const float* b, float* y) {
  if (s.m == 0 || s.n == 0) return;
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublas().sgemm(handle(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(s.n),
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
    CUBLAS_CHECK(cublas().sgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.k),
                             static_cast<int>(s.m), static_cast<int>(s.n), &one, w,
                             static_cast<int>(s.n), dy, static_cast<int>(s.n), &one, dx,
                             static_cast<int>(s.k)));
  if (dw)
    CUBLAS_CHECK(cublas().sgemm(handle(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(s.n),
                             static_cast<int>(s.k), static_cast<int>(s.m), &one, dy,
                             static_cast<int>(s.n), x, static_cast<int>(s.k), &one, dw,
                             static_cast<int>(s.n)));
  if (db) broadcast_add_backward(BroadcastShape{1, s.m, s.n, false}, dy, db, workspace);
}

}  // namespace ddpm::cuda
