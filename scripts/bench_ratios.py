#!/usr/bin/env python3
"""kernel-bench's rows as the GPU report wants them: each kernel against the previous version
of itself and against the library that does the same job, per shape and pass.

    scripts/bench_ratios.py KERNEL_BENCH_JSON      (kernel-bench --json; prints Markdown)

A ratio is the other row's time over this row's: above 1 this row is faster. "previous" is
the version it improves on (v2 on v1, ..., v4 on v3; flash on fused attention; the fused
loss on its unfused chain); "library" is what it is measured against (cuDNN in the same
maths for the convolutions, the cuBLAS GEMM floors for attention's forward, cuBLAS's bf16
GEMM for the wgmma GEMM). Issue 14's goal
for v4 is 0.8x cuDNN bf16 or better; issue 15's for attention is 1.0x cuDNN's SDPA (that
table is attention_reference.py --compare's). A row with nothing to compare shows "-".
Needs only the standard library: it runs wherever the report is written.
"""
import json
import sys

# (kernel prefix, variant) -> (previous version, library), by kernel-bench's names
# (apps/bench/*.cpp; tests/cli/bench_ratios.sh checks that it writes each of them).
RULES = {
    ("conv2d", "v1 naive"): (None, "cuDNN fp32"),
    ("conv2d", "v2 tiled (64x64 tiles)"): ("v1 naive", "cuDNN fp32"),
    ("conv2d", "v2 tiled (128x128 tiles)"): ("v2 tiled (64x64 tiles)", "cuDNN fp32"),
    ("conv2d", "v2 tiled, element by element"): ("v2 tiled (64x64 tiles)", "cuDNN fp32"),
    # the runs (16-byte gathers) against the same kernel gathering element by element
    ("conv2d", "v2 tiled"): ("v2 tiled, element by element", "cuDNN fp32"),
    ("conv2d", "v3 TF32 tensor cores"): ("v2 tiled", "cuDNN TF32"),
    # TF32 on v4's GEMM (conv2d_tf32.cu), on v3; and with every pass on bf16 pieces, on it
    ("conv2d", "v4 TF32"): ("v3 TF32 tensor cores", "cuDNN TF32"),
    ("conv2d", "v4 TF32, every pass on bf16 pieces"): ("v4 TF32", "cuDNN TF32"),
    ("conv2d", "v4 fp32 on bf16x6"): ("v2 tiled", "cuDNN fp32"),
    ("conv2d", "v4 bf16 (128x128 tiles)"): ("v3 TF32 tensor cores", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (128x128 tiles, 4 stages)"): ("v4 bf16 (128x128 tiles)", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (64x64 tiles)"): ("v3 TF32 tensor cores", "cuDNN bf16"),
    ("conv2d", "v4 bf16, bf16 activations"): ("v4 bf16 (128x128 tiles)", "cuDNN bf16"),
    ("conv2d", "v4 bf16, bf16 activations and weight copy"):
        ("v4 bf16, bf16 activations", "cuDNN bf16"),
    # 64x64 warp tiles (4 warps a 128x128 block) on the 8 warps of 64x32 the heuristic runs
    ("conv2d", "v4 bf16 (128x128 tiles, 64x64 warps)"): ("v4 bf16 (128x128 tiles)", "cuDNN bf16"),
    # 256x128 tiles of 64x64 warps (8 warps, one block an SM) on the 128x128 ones of 64x64
    ("conv2d", "v4 bf16 (256x128 tiles, 64x64 warps)"):
        ("v4 bf16 (128x128 tiles, 64x64 warps)", "cuDNN bf16"),
    ("conv2d", "direct (few outputs), bf16 activations"):
        ("v4 bf16, bf16 activations", "cuDNN bf16"),
    ("conv2d", "direct (few outputs), bf16 activations and weight copy"):
        ("v4 bf16, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (64x64 warps), bf16 activations"):
        ("v4 bf16, bf16 activations", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (64x64 warps), bf16 activations and weight copy"):
        ("v4 bf16, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (256x128 tiles), bf16 activations"):
        ("v4 bf16 (64x64 warps), bf16 activations", "cuDNN bf16"),
    ("conv2d", "v4 bf16 (256x128 tiles), bf16 activations and weight copy"):
        ("v4 bf16 (64x64 warps), bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "engine on cuDNN bf16 (+ glue)"): (None, "cuDNN bf16"),
    # cuDNN at its fastest (every algorithm timed, PyTorch's benchmark mode) on its
    # heuristics' pick, the library column's baseline of every row here
    ("conv2d", "cuDNN fp32, fastest algorithm"): ("cuDNN fp32", None),
    ("conv2d", "cuDNN TF32, fastest algorithm"): ("cuDNN TF32", None),
    ("conv2d", "cuDNN bf16, fastest algorithm"): ("cuDNN bf16", None),
    # v5 (Hopper's wgmma) on v4 with the same operands (the wgrad reads no weights)
    ("conv2d", "v5 wgmma, bf16 activations and weight copy"):
        ("v4 bf16, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, bf16 activations"): ("v4 bf16, bf16 activations", "cuDNN bf16"),
    # v5 with its dense B by the copy engine (TMA) on v5's cp.async B
    ("conv2d", "v5 wgmma, TMA B, bf16 activations and weight copy"):
        ("v5 wgmma, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, TMA B, bf16 activations"): ("v5 wgmma, bf16 activations", "cuDNN bf16"),
    # the gathered A by the copy engine's im2col mode too, in the plain loop, on B alone by
    # the copy engine; then warp-specialised, on the plain loop
    ("conv2d", "v5 wgmma, TMA B, im2col A, plain loop, bf16 activations and weight copy"):
        ("v5 wgmma, TMA B, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, TMA B, im2col A, plain loop, bf16 activations"):
        ("v5 wgmma, TMA B, bf16 activations", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, TMA B, im2col A, bf16 activations and weight copy"):
        ("v5 wgmma, TMA B, im2col A, plain loop, bf16 activations and weight copy",
         "cuDNN bf16"),
    ("conv2d", "v5 wgmma, TMA B, im2col A, bf16 activations"):
        ("v5 wgmma, TMA B, im2col A, plain loop, bf16 activations", "cuDNN bf16"),
    # v5 in a ring of 3 stages, two blocks an SM, on v5's one block of 4
    ("conv2d", "v5 wgmma, 2 blocks an SM, bf16 activations and weight copy"):
        ("v5 wgmma, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, 2 blocks an SM, bf16 activations"):
        ("v5 wgmma, bf16 activations", "cuDNN bf16"),
    # v5 on 256x128 tiles (two sub-tiles a warpgroup, 3 stages) on v5's 128x128 ones
    ("conv2d", "v5 wgmma, 256x128 tiles, bf16 activations and weight copy"):
        ("v5 wgmma, bf16 activations and weight copy", "cuDNN bf16"),
    ("conv2d", "v5 wgmma, 256x128 tiles, bf16 activations"):
        ("v5 wgmma, bf16 activations", "cuDNN bf16"),
    # the upsamplers by output phase on the reference's upsample then conv (same model FLOPs)
    ("upsample+conv", "by phase (v4 bf16, bf16 activations)"):
        ("upsample, then conv (v4 bf16, bf16 activations)", None),
    ("conv2d", "engine on cuDNN bf16, bf16 activations and weight copy (+ glue)"):
        ("engine on cuDNN bf16, bf16 activations (+ glue)", "cuDNN bf16"),
    ("attention", "fused"): ("straightforward", "cuBLAS GEMMs only"),
    ("attention", "flash bf16 (mma.sync)"): ("fused", "cuBLAS bf16 GEMMs only"),
    ("attention", "flash bf16 (mma.sync), bf16 tensors"):
        ("flash bf16 (mma.sync)", "cuBLAS bf16 GEMMs only"),
    # the pair on Hopper's wgmma on the same pair on mma.sync (its backward: dq by cuBLAS,
    # as the mma.sync row's "dq by cuBLAS" is, beside it)
    ("attention", "flash bf16 (wgmma), bf16 tensors"):
        ("flash bf16 (mma.sync), bf16 tensors", "cuBLAS bf16 GEMMs only"),
    # dS through memory and dq by cuBLAS on the dq kernel's recomputation
    ("attention", "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS"):
        ("flash bf16 (mma.sync), bf16 tensors", "cuBLAS bf16 GEMMs only"),
    # the L x L matrices in memory and cuBLAS's GEMMs on the flash pair
    ("attention", "bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors"):
        ("flash bf16 (mma.sync), bf16 tensors", "cuBLAS bf16 GEMMs only"),
    ("linear", "SGEMM TF32 (+ rounding)"): ("SGEMM fp32", None),
    ("linear", "GemmEx bf16 (+ conversion)"): ("SGEMM TF32 (+ rounding)", None),
    # the forward's bias in cuBLASLt's epilogue on the same product and a pass after it
    ("linear", "SGEMM fp32, bias in cuBLASLt's epilogue"): ("SGEMM fp32", None),
    ("linear", "SGEMM TF32 (+ rounding), bias in cuBLASLt's epilogue"):
        ("SGEMM TF32 (+ rounding)", None),
    ("linear", "GemmEx bf16 (+ conversion), bias in cuBLASLt's epilogue"):
        ("GemmEx bf16 (+ conversion)", None),
    ("linear", "GemmEx bf16, bf16 activations, bias in cuBLASLt's epilogue"):
        ("GemmEx bf16, bf16 activations", None),
    # Hopper's wgmma GEMM on cuBLAS's bf16 GEMM, same operands and layout
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages)"): (None, "cuBLAS bf16 (GemmEx, TN)"),
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages), both MN-major"):
        ("wgmma bf16 (128x128 tiles, 4 stages)", "cuBLAS bf16 (GemmEx, NT)"),
    # the copy engine's loads (TMA) on the same kernel's cp.async loads
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages, TMA loads)"):
        ("wgmma bf16 (128x128 tiles, 4 stages)", "cuBLAS bf16 (GemmEx, TN)"),
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages, TMA loads), both MN-major"):
        ("wgmma bf16 (128x128 tiles, 4 stages), both MN-major", "cuBLAS bf16 (GemmEx, NT)"),
    # the warp-specialised schedule (producer and consumer warpgroups) on the plain TMA one
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA)"):
        ("wgmma bf16 (128x128 tiles, 4 stages, TMA loads)", "cuBLAS bf16 (GemmEx, TN)"),
    ("gemm", "wgmma bf16 (128x128 tiles, 4 stages, warp-specialised TMA), both MN-major"):
        ("wgmma bf16 (128x128 tiles, 4 stages, TMA loads), both MN-major",
         "cuBLAS bf16 (GemmEx, NT)"),
    # two blocks an SM (a ring of 3 stages) on the plain TMA schedule's one block of 4
    ("gemm", "wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM)"):
        ("wgmma bf16 (128x128 tiles, 4 stages, TMA loads)", "cuBLAS bf16 (GemmEx, TN)"),
    ("gemm", "wgmma bf16 (128x128 tiles, 3 stages, TMA loads, 2 blocks an SM), both MN-major"):
        ("wgmma bf16 (128x128 tiles, 4 stages, TMA loads), both MN-major",
         "cuBLAS bf16 (GemmEx, NT)"),
    # group norm: each mapping on the one before it (channel slab on block per group,
    # channel runs on channel slab, slab in registers on channel runs), in each storage;
    # bf16 storage on f32 in the block-per-group mapping
    ("group_norm", "channel slab"): ("block per group", None),
    ("group_norm", "channel runs"): ("channel slab", None),
    ("group_norm", "block per group, bf16 storage"): ("block per group", None),
    ("group_norm", "channel slab, bf16 storage"): ("block per group, bf16 storage", None),
    ("group_norm", "channel runs, bf16 storage"): ("channel slab, bf16 storage", None),
    # v4 (the slab in registers) on v3
    ("group_norm", "slab in registers"): ("channel runs", None),
    ("group_norm", "slab in registers, bf16 storage"): ("channel runs, bf16 storage", None),
    ("group_norm+silu bwd", "fused (dh recomputed), bf16 storage"):
        ("dh pass, then dx pass, bf16 storage", None),
    ("group_norm+silu+dropout bwd", "fused (mask regenerated), bf16 storage"):
        ("dh pass, then dx pass, bf16 storage", None),
    ("corrupt", "fused f32 x0"): ("unfused chain", None),
    ("corrupt", "fused u8 x0 + flip"): ("unfused chain", None),
    ("loss", "fused"): ("unfused chain", None),
    ("corrupt+loss", "fused"): ("unfused chain", None),
}


def rule(kernel, variant):
    for (prefix, name), pair in RULES.items():
        if kernel.startswith(prefix) and variant == name:
            return pair
    return None


def present(rows, kernel, shape, other):
    """The variant `other` names at this kernel and shape (a tuple: the first present)."""
    for name in (other,) if isinstance(other, str) else other or ():
        if (kernel, shape, name) in rows:
            return name
    return None


def ratio(rows, kernel, shape, other, ms):
    """The other variant's time at this kernel and shape over ms, as text."""
    theirs = rows.get((kernel, shape, other))
    return f"{theirs['ms'] / ms:.2f}x" if theirs and ms > 0 else "-"


def table(bench):
    rows = {(r["kernel"], r["shape"], r["variant"]): r for r in bench["rows"]}
    out = ["| kernel | shape | variant | ms | rate | of peak | x previous | previous | "
           "x library | library |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench["rows"]:
        pair = rule(r["kernel"], r["variant"])
        if pair is None:
            continue
        previous, library = (present(rows, r["kernel"], r["shape"], name) for name in pair)
        out.append(
            f"| {r['kernel']} | {r['shape']} | {r['variant']} | {r['ms']:.4f} | "
            f"{r['rate']:.2f} {r.get('unit', '')} | {100 * r.get('fraction_of_peak', 0):.1f}% | "
            f"{ratio(rows, r['kernel'], r['shape'], previous, r['ms'])} | {previous or '-'} | "
            f"{ratio(rows, r['kernel'], r['shape'], library, r['ms'])} | {library or '-'} |")
    return "\n".join(out)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: scripts/bench_ratios.py KERNEL_BENCH_JSON")
    with open(argv[1]) as f:
        bench = json.load(f)
    print(table(bench))
    if not bench.get("complete", True):
        print("\n(kernel-bench stopped before its last section: these are the sections it finished)")


if __name__ == "__main__":
    main(sys.argv)
