// The bf16 copy of the weights. Under precision bf16 on a GPU every product rounds its weight
// operand to bf16 (conv v4, cuDNN bf16, the bf16 linear GEMMs); without a copy each call
// converts its weight tensor first, twice per layer and step (forward and dgrad), and a
// sampler converts every weight at each of its 1000 denoising steps. With one, a second flat
// buffer beside the fp32 parameters holds bf16(w), rounded to nearest even like every other
// conversion, and the kernels read it in place of converting.
//
// Freshness, without trusting callers to remember: a Storage counts its writes
// (Storage::version: Tensor::copy_from and zero, accumulate, scale_in_place). The copy
// remembers the count it was made at, and whoever asks for it after the count has moved (a
// checkpoint loaded, the EMA weights swapped in for sampling and back, the initialisation)
// gets it refreshed first: one conversion pass over the whole buffer. AdamW writes the copy
// in its own pass over the buffer (kernels/cuda/optim.cuh), so a training step converts no
// weights at all, and a sampling loop converts them once.
//
// The copy lives on the fp32 buffer's Storage, so any parameter window finds it; a tensor
// on another storage simply has none (its kernels convert as before). CUDA only.
#pragma once

#include <cstdint>
#include <functional>

#include "engine/tensor.h"

namespace ddpm {

// Gives `flat` (an f32 buffer on the GPU) a bf16 copy, made fresh now; a no-op if it has one.
void keep_bf16_copy(const Tensor& flat);
bool has_bf16_copy(const Tensor& t);  // t's storage keeps a copy
// Frees the copy: the kernels convert the weights at each call again (what kernel-bench's
// step compares the copy with).
void drop_bf16_copy(const Tensor& flat);

// bf16(t) for a window t on a buffer with a copy (refreshed first if stale); null otherwise.
const uint16_t* bf16_copy_of(const Tensor& t);

// A write of the whole buffer `flat` that also writes its copy in the same pass (AdamW):
// `write` gets the copy, fresh (so elements it leaves alone stay right), or null when there
// is none; afterwards the write is counted and the copy stays fresh.
void write_with_copy(const Tensor& flat, const std::function<void(uint16_t* copy)>& write);

}  // namespace ddpm
