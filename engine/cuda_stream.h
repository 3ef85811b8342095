// The engine's CUDA stream. Every launch (DDPM_LAUNCH), copy, memset, event and cuBLAS
// product of the engine is queued on it, none on the legacy default stream:
//  - one stream orders all work, which the caching allocator's immediate reuse of a freed
//    block relies on (engine/cuda_allocator.h);
//  - a stream of its own is what CUDA graph capture needs (the legacy stream cannot be
//    captured), the way to one graph per training step (docs/training-step.md);
//  - it is created blocking (cudaStreamCreate's default), so work a library still queues on
//    the legacy stream (cuDNN in the benchmarks, NCCL's synchronisation) stays ordered with it.
// Created on first use. Include only from code built with CUDA or its emulation.
#pragma once

#include <cuda_runtime.h>

namespace ddpm {

cudaStream_t engine_stream();  // engine/device.cpp

}  // namespace ddpm
