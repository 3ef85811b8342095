// DDPM_HD marks small functions callable from host and device code (shape helpers, Philox).
#pragma once

#if defined(__CUDACC__)
#define DDPM_HD __host__ __device__ __forceinline__
#else
#define DDPM_HD inline
#endif
