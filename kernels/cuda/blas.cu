// cuBLAS and cuBLASLt opened on first use (blas.cuh says why), and their handles.
#if !DDPM_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include <string>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "engine/cuda_stream.h"
#include "kernels/cuda/blas.cuh"

namespace ddpm::cuda::blas {

namespace {

#if !DDPM_CUDA_EMULATION
// lib<name>.so.<cuBLAS's major version>, from the loader's path or the toolkit's library
// folder, and its symbols; `what` (who needs it) opens the error if it cannot be loaded.
struct Library {
  std::string soname;
  void* handle;
  void* symbol(const char* name) const {
    void* p = dlsym(handle, name);
    CHECK(p != nullptr, soname << " has no " << name);
    return p;
  }
};
Library open_library(const char* name, const char* what) {
  const std::string soname = std::string(name) + ".so." + std::to_string(CUBLAS_VER_MAJOR);
  void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef DDPM_CUDA_LIBRARY_DIR
  if (lib == nullptr)
    lib = dlopen((DDPM_CUDA_LIBRARY_DIR "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
  CHECK(lib != nullptr, what << ": cannot load " << soname << ": " << dlerror());
  return Library{soname, lib};
}
#endif

}  // namespace

const Api& api() {
  static const Api loaded = [] {
#if DDPM_CUDA_EMULATION
    return Api{&cublasCreate, &cublasSetMathMode, &cublasSetStream, &cublasSgemm,
               static_cast<GemmEx>(&cublasGemmEx),
               static_cast<GemmStridedBatchedEx>(&cublasGemmStridedBatchedEx)};
#else
    const Library lib =
        open_library("libcublas", "the CUDA linear layers and attention need cuBLAS");
    return Api{reinterpret_cast<decltype(&cublasCreate)>(lib.symbol("cublasCreate_v2")),
               reinterpret_cast<decltype(&cublasSetMathMode)>(lib.symbol("cublasSetMathMode")),
               reinterpret_cast<decltype(&cublasSetStream)>(lib.symbol("cublasSetStream_v2")),
               reinterpret_cast<decltype(&cublasSgemm)>(lib.symbol("cublasSgemm_v2")),
               reinterpret_cast<GemmEx>(lib.symbol("cublasGemmEx")),
               reinterpret_cast<GemmStridedBatchedEx>(lib.symbol("cublasGemmStridedBatchedEx"))};
#endif
  }();
  return loaded;
}

const LtApi& lt_api() {
  static const LtApi loaded = [] {
#if DDPM_CUDA_EMULATION
#define DDPM_LT_ENTRY(f) &f
#else
    const Library lib = open_library("libcublasLt", "the CUDA linear layers need cuBLASLt");
#define DDPM_LT_ENTRY(f) reinterpret_cast<decltype(&f)>(lib.symbol(#f))
#endif
    return LtApi{DDPM_LT_ENTRY(cublasLtCreate),
                 DDPM_LT_ENTRY(cublasLtMatmulDescCreate),
                 DDPM_LT_ENTRY(cublasLtMatmulDescDestroy),
                 DDPM_LT_ENTRY(cublasLtMatmulDescSetAttribute),
                 DDPM_LT_ENTRY(cublasLtMatrixLayoutCreate),
                 DDPM_LT_ENTRY(cublasLtMatrixLayoutDestroy),
                 DDPM_LT_ENTRY(cublasLtMatmulPreferenceCreate),
                 DDPM_LT_ENTRY(cublasLtMatmulPreferenceDestroy),
                 DDPM_LT_ENTRY(cublasLtMatmulPreferenceSetAttribute),
                 DDPM_LT_ENTRY(cublasLtMatmulAlgoGetHeuristic),
                 DDPM_LT_ENTRY(cublasLtMatmul)};
#undef DDPM_LT_ENTRY
  }();
  return loaded;
}

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t created = [] {
    cublasLtHandle_t h = nullptr;
    CUBLAS_CHECK(lt_api().create(&h));
    return h;
  }();
  return created;
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
