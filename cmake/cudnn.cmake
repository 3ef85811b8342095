# cuDNN is the baseline our hand-written kernels are compared against. It is looked for in
# the CUDA toolkit, the system, and (on GPU machines without a system cuDNN) a PyTorch
# installation's nvidia/cudnn wheel: pass -DCUDNN_ROOT=/path/to/site-packages/nvidia/cudnn.
find_path(CUDNN_INCLUDE_DIR cudnn.h
  HINTS ${CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT
  PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 libcudnn.so.8
  HINTS ${CUDNN_ROOT} ${CUDAToolkit_LIBRARY_DIR} ENV CUDNN_ROOT
  PATH_SUFFIXES lib lib64)
if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
  message(FATAL_ERROR "cuDNN not found (cudnn.h: '${CUDNN_INCLUDE_DIR}', library: "
                      "'${CUDNN_LIBRARY}'). Set CUDNN_ROOT, or configure with -DDDPM_CUDA=OFF.")
endif()
add_library(ddpm_cudnn INTERFACE)
target_include_directories(ddpm_cudnn INTERFACE ${CUDNN_INCLUDE_DIR})
target_link_libraries(ddpm_cudnn INTERFACE ${CUDNN_LIBRARY})
message(STATUS "ddpm: cuDNN ${CUDNN_LIBRARY}")
