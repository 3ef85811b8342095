// CUDA fused diffusion loss: corruption, and loss + gradient in one pass, eps regenerated
// from Philox (never stored). Same contract as kernels/cpu/diffusion_loss.h, f32 only;
// x0 is f32 or the raw uint8 NHWC batch. All pointers on the device.
#pragma once

#include <cstdint>

#include "kernels/shapes.h"

namespace ddpm::cuda {

// Chunks of each sample the loss kernel reduces separately; `partial` holds n x chunks floats.
int64_t loss_chunks(const DiffusionLossShape& s);

// The kernels' mapping (diffusion_loss.cu): 1 or 2 quads of 4 elements a thread, or 0 (the
// default) for the choice by the batch's size. Changes which partial sums the loss adds, so
// its last bits, never x_t's or dpred's. For tests and benchmarks.
void set_diffusion_loss_quads(int quads);
// The quads a thread moves for shape s: the forced mapping, else the choice by size.
int diffusion_loss_quads(const DiffusionLossShape& s);
// set_diffusion_loss_quads(quads) for a scope, then the choice by size again, however the
// scope ends.
class ForcedLossQuads {
 public:
  explicit ForcedLossQuads(int quads) { set_diffusion_loss_quads(quads); }
  ~ForcedLossQuads() { set_diffusion_loss_quads(0); }
  ForcedLossQuads(const ForcedLossQuads&) = delete;
  ForcedLossQuads& operator=(const ForcedLossQuads&) = delete;
};

template <class X0>
void diffusion_corrupt(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                       const X0* x0 /* (n, dim) */, float* x_t /* (n, dim) */);

// Writes dpred (n, dim), per_sample (n), loss (1); x0 may be null for the epsilon target.
template <class X0>
void diffusion_loss(const DiffusionLossShape& s, const DiffusionLossTables<float>& tab,
                    const float* pred, const X0* x0, float* dpred, float* per_sample,
                    float* loss, float* partial /* workspace (n, loss_chunks) */);

}  // namespace ddpm::cuda
