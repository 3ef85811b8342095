// cuBLAS opened on first use (blas.cuh says why), and its handles.
#if !DDPM_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/blas.cuh"

namespace ddpm::cuda::blas {

const Api& api() {
  static const Api loaded = [] {
#if DDPM_CUDA_EMULATION
    return Api{&cublasCreate, &cublasSetMathMode, &cublasSetStream, &cublasSgemm,
               static_cast<GemmEx>(&cublasGemmEx),
               static_cast<GemmStridedBatchedEx>(&cublasGemmStridedBatchedEx)};
#else
    const std::string soname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef DDPM_CUDA_LIBRARY_DIR
    if (lib == nullptr) lib = dlopen((DDPM_CUDA_LIBRARY_DIR "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    CHECK(lib != nullptr, "the CUDA linear layers and attention need cuBLAS: cannot load "
                              << soname << ": " << dlerror());
    auto symbol = [&](const char* name) {
      void* p = dlsym(lib, name);
      CHECK(p != nullptr, "cuBLAS (" << soname << ") has no " << name);
      return p;
    };
    return Api{reinterpret_cast<decltype(&cublasCreate)>(symbol("cublasCreate_v2")),
               reinterpret_cast<decltype(&cublasSetMathMode)>(symbol("cublasSetMathMode")),
               reinterpret_cast<decltype(&cublasSetStream)>(symbol("cublasSetStream_v2")),
               reinterpret_cast<decltype(&cublasSgemm)>(symbol("cublasSgemm_v2")),
               reinterpret_cast<GemmEx>(symbol("cublasGemmEx")),
               reinterpret_cast<GemmStridedBatchedEx>(symbol("cublasGemmStridedBatchedEx"))};
#endif
  }();
  return loaded;
}

cublasHandle_t handle(cublasMath_t math) {
  auto create = [](cublasMath_t mode) {
    cublasHandle_t created = nullptr;
    CUBLAS_CHECK(api().create(&created));
    CUBLAS_CHECK(api().set_math_mode(created, mode));
    CUBLAS_CHECK(api().set_stream(created, engine_stream()));
    return created;
  };
  static cublasHandle_t plain = create(CUBLAS_DEFAULT_MATH);
  if (math == CUBLAS_DEFAULT_MATH) return plain;
  static cublasHandle_t tf32 = create(CUBLAS_TF32_TENSOR_OP_MATH);
  return tf32;
}

}  // namespace ddpm::cuda::blas
