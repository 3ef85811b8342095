#!/usr/bin/env python3
"""The kernel times predicted without a GPU, against a kernel-bench run: each one measured,
and whether it held.

    scripts/predictions.py KERNEL_BENCH_JSON      (kernel-bench --json; prints Markdown)

Changes made between GPU runs are compiled and tested on the CPU emulation, and their
write-ups predict what they will take (docs/kernels.md, docs/fused-loss.md), from the last
run's figures: on an H200 at batch 128. Each prediction here is a kernel-bench row (kernel,
shape, variant), the range of milliseconds predicted, and where the reasoning is. A figure
written "about x" or "~x" is taken as x +- 25%; "at least 2x faster than t" as at most t / 2.
Verdicts: "held" (inside the range), "faster" or "slower" than the range (by its nearer
end), "not run" (no such row: its section did not run, or stopped). A run on another GPU
or batch is compared all the same, under a line that says so. A prediction that missed is
news about the model behind it: read the write-up it names.
Needs only the standard library: it runs wherever the report is written.
"""
import json
import sys

PREDICTED_ON = "H200"  # the GPU and batch the predictions' figures are for
PREDICTED_BATCH = 128


def about(ms):
    """A figure given as "about ms": ms +- 25%."""
    return (0.75 * ms, 1.25 * ms)


KERNELS = "docs/kernels.md"
CONV_32 = "res 32x32 32x32 128->128"
ATTN_D256 = "16x16, 1 head B128 L256 d256"
ATTN_L1024 = "32x32, 4 heads B128 L1024 d32"
BF16_ACT = "v4 bf16, bf16 activations"
DIRECT = "direct (few outputs), bf16 activations"

# (kernel, shape, variant, (low ms, high ms), where the prediction is made), by
# kernel-bench's names (apps/bench/*.cpp; tests/cli/predictions.sh checks that it writes each).
PREDICTIONS = [
    # v4's wgrad split in one wave of blocks (split_k_one_wave): 29 and 7 slices
    ("conv2d wgrad", CONV_32, BF16_ACT, about(0.16), KERNELS + ", v4 step 9 (split-K in one wave)"),
    ("conv2d wgrad", "res 16x16 16x16 256->256", BF16_ACT, about(0.14),
     KERNELS + ", v4 step 9 (split-K in one wave)"),
    # the downsampler's strided dgrad by output phase
    ("conv2d dgrad", "downsample 32x32 128->128", BF16_ACT, (0.05, 0.06),
     KERNELS + ", v4: the strided dgrad by phase"),
    # the last layer (128 -> 3) on the direct kernels of the CUDA cores
    ("conv2d fwd", "conv_out 32x32 128->3", DIRECT, about(0.03), KERNELS + ", conv2d_thin.cu"),
    ("conv2d dgrad", "conv_out 32x32 128->3", DIRECT, about(0.03), KERNELS + ", conv2d_thin.cu"),
    ("conv2d wgrad", "conv_out 32x32 128->3", DIRECT, about(0.03), KERNELS + ", conv2d_thin.cu"),
    # TF32 on v4's GEMM: TF32 mma in the forward and stride-1 dgrad, bf16 pieces in the wgrad
    ("conv2d fwd", CONV_32, "v4 TF32", about(0.3), KERNELS + ", TF32 on v4's GEMM"),
    ("conv2d dgrad", CONV_32, "v4 TF32", about(0.4), KERNELS + ", TF32 on v4's GEMM"),
    ("conv2d wgrad", CONV_32, "v4 TF32", about(1.1), KERNELS + ", TF32 on v4's GEMM"),
    # fp32 on v4's bf16 tensor cores, three pieces an operand
    ("conv2d fwd", CONV_32, "v4 fp32 on bf16x6", about(1.0), KERNELS + ", fp32 on bf16x6"),
    ("conv2d dgrad", CONV_32, "v4 fp32 on bf16x6", about(1.3), KERNELS + ", fp32 on bf16x6"),
    ("conv2d wgrad", CONV_32, "v4 fp32 on bf16x6", about(1.8), KERNELS + ", fp32 on bf16x6"),
    # v2 with its gathers divided by multiplication: at least 2x the H200's 4.18 / 6.35 / 6.10
    ("conv2d fwd", CONV_32, "v2 tiled", (0.0, 4.18 / 2), KERNELS + ", v2 (FastDivide)"),
    ("conv2d dgrad", CONV_32, "v2 tiled", (0.0, 6.35 / 2), KERNELS + ", v2 (FastDivide)"),
    ("conv2d wgrad", CONV_32, "v2 tiled", (0.0, 6.10 / 2), KERNELS + ", v2 (FastDivide)"),
    # attention through cuBLAS's GEMMs, bf16 and fp32; P recomputed by chunks past L = 6 d
    ("attention fwd", ATTN_D256, "bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors",
     (0.045, 0.06), KERNELS + ", attention on cuBLAS's GEMMs (bf16)"),
    ("attention bwd", ATTN_D256, "bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors",
     (0.08, 0.11), KERNELS + ", attention on cuBLAS's GEMMs (bf16)"),
    ("attention fwd", ATTN_D256, "fp32 GEMMs (cuBLAS) and row kernels", about(0.3),
     KERNELS + ", attention on cuBLAS's GEMMs (fp32)"),
    ("attention bwd", ATTN_D256, "fp32 GEMMs (cuBLAS) and row kernels", about(0.6),
     KERNELS + ", attention on cuBLAS's GEMMs (fp32)"),
    ("attention fwd", ATTN_L1024, "fp32 GEMMs (cuBLAS) and row kernels, P recomputed by chunks",
     about(3.6), KERNELS + ", P recomputed by chunks of samples"),
    ("attention bwd", ATTN_L1024, "fp32 GEMMs (cuBLAS) and row kernels, P recomputed by chunks",
     about(9.0), KERNELS + ", P recomputed by chunks of samples"),
    # the flash backward's dq by a GEMM on bf16 tensors
    ("attention bwd", ATTN_D256, "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS",
     (0.24, 0.26), KERNELS + ", flash backward: dq by GEMM"),
    # the fused loss's deep mapping (two quads a thread, loads first) from 2^22 elements
    ("loss fwd+bwd", "(64, 256, 256, 3) epsilon", "fused", about(0.035),
     "docs/fused-loss.md, What limits it"),
    ("loss fwd+bwd", "(64, 256, 256, 3) v", "fused", about(0.04),
     "docs/fused-loss.md, What limits it"),
]


def verdict(ms, low, high):
    if ms is None:
        return "not run"
    if ms < low:
        return f"faster ({low / ms:.2f}x the range's low end)"
    if ms > high:
        return f"slower ({ms / high:.2f}x its high end)"
    return "held"


def predicted_range(low, high):
    return f"at most {high:.3f}" if low == 0 else f"{low:.3f}-{high:.3f}"


def table(bench):
    """The Markdown table of every prediction against the run `bench` (kernel-bench --json)."""
    rows = {}  # a row timed twice (a section both processes ran): the first time
    for r in bench.get("rows", []):
        rows.setdefault((r["kernel"], r["shape"], r["variant"]), r["ms"])
    out = []
    device, batch = bench.get("device", "?"), bench.get("batch")
    if PREDICTED_ON not in device or batch != PREDICTED_BATCH:
        out.append(f"The predictions are for an {PREDICTED_ON} at batch {PREDICTED_BATCH}; this "
                   f"run: {device}, batch {batch}. Compared all the same.\n")
    out.append("| kernel | shape | variant | predicted ms | measured ms | verdict | where |")
    out.append("|---|---|---|---|---|---|---|")
    held = 0
    for kernel, shape, variant, (low, high), where in PREDICTIONS:
        ms = rows.get((kernel, shape, variant))
        v = verdict(ms, low, high)
        held += v == "held"
        measured = "-" if ms is None else f"{ms:.4f}"
        out.append(f"| {kernel} | {shape} | {variant} | {predicted_range(low, high)} | "
                   f"{measured} | {v} | {where} |")
    out.append(f"\n{held} of {len(PREDICTIONS)} predictions held.")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/predictions.py KERNEL_BENCH_JSON")
    try:
        with open(sys.argv[1]) as f:
            bench = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"predictions.py: cannot read {sys.argv[1]}: {e}")
    sys.stdout.write(table(bench))


if __name__ == "__main__":
    main()
