# CUDA is optional at configure time only: if nvcc is missing the CPU path still builds.
#   DDPM_CUDA=OFF               force a CPU-only build
#   CMAKE_CUDA_ARCHITECTURES    override the default list (CI builds one: -DCMAKE_CUDA_ARCHITECTURES=80)
option(DDPM_CUDA "Build the CUDA kernels when nvcc is found" ON)
set(DDPM_WITH_CUDA OFF)

if(DDPM_CUDA)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
endif()

if(DDPM_CUDA AND CMAKE_CUDA_COMPILER)
  # Default: Ampere (A100, sm_80) and Hopper (H100/H200, sm_90) as real code, plus PTX for
  # sm_90 so newer GPUs can JIT it.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  include(cmake/cudnn.cmake)
  set(DDPM_WITH_CUDA ON)

  add_library(ddpm_cuda_flags INTERFACE)
  # Never --use_fast_math: division and sqrt must stay IEEE-rounded so CPU and GPU agree
  # (Philox normals are compared bit for bit). -lineinfo lets Nsight and compute-sanitizer
  # point at source lines at no run-time cost.
  target_compile_options(ddpm_cuda_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xcompiler=-Wall>)
  message(STATUS "ddpm: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "ddpm: nvcc not found (or DDPM_CUDA=OFF): building the CPU path only; "
                 "CUDA kernels and CUDA tests are left out")
endif()
