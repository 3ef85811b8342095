// How the attention op runs on bf16 activations, per shape: the flash pair (dq in the dq
// kernel, or dq by cuBLAS's GEMM from dS kept in memory), cuBLAS's GEMMs with the L x L
// matrices in memory, or on Hopper the flash pair on wgmma (attention.cuh has each). By a
// rule (attention_gemm_bf16_pays, attention_flash_bf16_dq_by_gemm_pays: arithmetic from
// one H200 run's rows), or, with `cuda_autotune` on, timed: each path that can run the
// shape, forward and backward, once on its first use, the fastest kept and the times
// printed, as conv2d_autotune.cuh does for the convolutions. The rule's cut-offs were set
// from FLOP and byte counts, not from timings of these very kernels on the GPU at hand; the
// timing is.
#pragma once

#include "kernels/shapes.h"

namespace ddpm::cuda {

// FlashWgmma ("flash on wgmma"): the flash pair on Hopper's wgmma (attention_flash_wgmma.cu
// and its backward, dq by GEMM), where gemm_sm90_available() and
// attention_flash_wgmma_supports(s); never the rule's until a GPU has timed it, a candidate
// of the timing where set_attention_autotune_unverified allows it.
enum class AttentionBf16Path { Flash, FlashDqByGemm, Gemm, FlashWgmma };
const char* attention_bf16_path_name(AttentionBf16Path p);  // "flash", ...

// The rule: Gemm where attention_gemm_bf16_pays, else FlashDqByGemm where dq by GEMM pays,
// else Flash. s: a shape the flash pair supports (attention_flash_bf16_supports).
AttentionBf16Path attention_bf16_path_by_rule(const AttentionShape& s);

// The path that ran s fastest, a forward and a backward (training), or a forward alone
// (`backward` false: sampling, where FlashDqByGemm is Flash): each path that can run s (the
// GEMM ones need head dims that are multiples of 8, and hold B H L L matrices: at most 2^28
// elements each), on scratch operands, each path's first run checked against the flash
// pair's (autotune_check.cuh; one that differs is left out), then the median of 5 runs
// between CUDA events on the engine's stream; the times and the choice printed once per
// shape and kind ("attention autotune: ..."). Not during a stream capture (it allocates
// and waits): a captured step's shapes were all seen by the eager steps before it.
AttentionBf16Path attention_bf16_path_autotuned(const AttentionShape& s, bool backward);
// Whether the timing also takes the paths no GPU has run yet: today the flash pair on wgmma
// (2026-12-07). Its tiles arrive by the copy engine and its warps wait on mbarriers; where a
// GPU reads the PTX ISA otherwise than the CPU emulation does, a wait that never completes
// traps (ptx_sm90.cuh), and a trap ends the process's CUDA context, the training run with
// it. The check of each candidate's output (autotune_check.cuh) catches a wrong result, not
// a trap. Off by default (config key cuda_autotune_unverified); part of the choice's key.
void set_attention_autotune_unverified(bool on);

// Makes `p` the autotuned choice for s and `backward`, as if it had been timed fastest,
// unless it was timed already (then false): for tests, which need a choice the rule would
// not make.
bool attention_bf16_path_remember(const AttentionShape& s, bool backward, AttentionBf16Path p);

}  // namespace ddpm::cuda
