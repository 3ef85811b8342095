#!/usr/bin/env python3
"""cuDNN's fused attention (SDPA), and PyTorch's other attention kernels, at kernel-bench's shapes.

kernel-bench's attention section (apps/bench/attention_bench.cpp) times the engine's kernels at
the CIFAR-10 model's 16x16 attention (L = 256, one head of d = 256), the same map in 2 heads
of 128 and 4 of 64, and a 32x32 map with 4 heads (L = 1024, d = 32), batch 128. This script
times the baselines the issue names at the same shapes, in bf16 (fp32 softmax statistics and
sums inside each kernel):

  cuDNN SDPA        torch.nn.functional.scaled_dot_product_attention restricted to
                    SDPBackend.CUDNN_ATTENTION: cuDNN's fused flash attention, which PyTorch
                    reaches through cudnn-frontend (the engine does not: cudnn-frontend is not
                    installed on its machines, and the backend graph API by hand is not worth
                    a baseline)
  FlashAttention-2  SDPBackend.FLASH_ATTENTION (PyTorch's copy of Tri Dao's kernels)
  mem-efficient     SDPBackend.EFFICIENT_ATTENTION (xFormers' kernels)

Forward and backward are timed apart: the forward as in training (inputs that require grad, so
the softmax statistics the backward needs are saved, as the engine's forward saves its lse),
the backward as torch.autograd.grad of one saved forward (retain_graph), the gradient of the
output given. FLOPs as kernel-bench counts them: forward
4 B H L^2 d, backward 8 B H L^2 d. Timing as kernel-bench's: CUDA events around the call alone,
a buffer twice the L2 written before each run, the median of 20 runs after 3 warm-ups.
q, k, v are contiguous (B, H, L, d) bf16 tensors drawn like kernel-bench's (0.3 N(0, 1)); the
engine's packed (B, L, 3C) layout would only make PyTorch copy first.

    python3 scripts/attention_reference.py [--batch 128] [--json OUT]
    python3 scripts/attention_reference.py --compare KERNEL_BENCH_JSON THIS_JSON

--compare prints the table gpu-check's report carries: per shape and pass, the engine's bf16
flash rows against cuDNN SDPA (ratio = cuDNN's time / the engine's: above 1 the engine is
faster), and the bf16 GEMM floor. It needs no GPU and no torch. A backend that refuses a shape
(a head dim it does not support, an old GPU) gets a row saying why, not a time.
"""
import argparse
import json
import sys

# (name, L, C, heads): kernel-bench's cases (apps/bench/attention_bench.cpp), same order.
CASES = [("16x16, 1 head", 256, 256, 1), ("16x16, 2 heads", 256, 256, 2),
         ("16x16, 4 heads", 256, 256, 4), ("32x32, 4 heads", 1024, 128, 4)]
BACKENDS = [("cuDNN SDPA bf16", "CUDNN_ATTENTION"), ("FlashAttention-2 bf16", "FLASH_ATTENTION"),
            ("mem-efficient bf16", "EFFICIENT_ATTENTION")]
# The engine's rows that --compare sets against cuDNN (kernel-bench's variant names).
ENGINE_VARIANTS = ["flash bf16 (wgmma), bf16 tensors", "flash bf16 (mma.sync), bf16 tensors",
                   "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS",
                   "bf16 GEMMs (cuBLAS) and row kernels, bf16 tensors", "flash bf16 (mma.sync)"]
FLOOR_VARIANT = "cuBLAS bf16 GEMMs only"
BASELINE = "cuDNN SDPA bf16"


def shape_name(name, batch, l, c, heads):
    """kernel-bench's shape string for a case, so the two JSON files join on it."""
    return f"{name} B{batch} L{l} d{c // heads}"


def forward_flops(batch, l, c, heads):
    return 4.0 * batch * heads * l * l * (c // heads)


def median_ms(torch, fn, flush, warmup=3, reps=20):
    """kernel-bench's method: L2 flushed before each run, events around the call alone."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        flush.zero_()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def measure(args):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        print("attention_reference: no GPU visible to torch; nothing to measure")
        return []
    props = torch.cuda.get_device_properties(0)
    flush = torch.empty(2 * max(props.L2_cache_size, 1 << 20), dtype=torch.uint8, device="cuda")
    print(f"device: {props.name}  torch {torch.__version__}  cuDNN {torch.backends.cudnn.version()}"
          f"  batch {args.batch}")
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(5)
    for name, l, c, heads in CASES:
        shape = shape_name(name, args.batch, l, c, heads)
        flops = forward_flops(args.batch, l, c, heads)
        d = c // heads

        def draw():
            t = 0.3 * torch.randn(args.batch, heads, l, d, generator=gen, device="cuda")
            return t.to(torch.bfloat16).requires_grad_(True)

        q, k, v = draw(), draw(), draw()
        dout = torch.randn(args.batch, heads, l, d, generator=gen, device="cuda").to(torch.bfloat16)
        for variant, backend in BACKENDS:
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    out = F.scaled_dot_product_attention(q, k, v)
                    fwd = median_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v), flush)
                    bwd = median_ms(torch, lambda: torch.autograd.grad(
                        out, (q, k, v), dout, retain_graph=True), flush)
            except Exception as e:  # the backend refuses this shape or GPU (or is absent)
                reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                rows.append({"kernel": "attention", "shape": shape, "variant": variant,
                             "unsupported": reason})
                continue
            for kernel, ms, f in (("attention fwd", fwd, flops), ("attention bwd", bwd, 2 * flops)):
                rows.append({"kernel": kernel, "shape": shape, "variant": variant, "ms": ms,
                             "tflops": f / ms / 1e9})
    return rows


def print_rows(rows):
    print(f"{'kernel':<15} {'shape':<34} {'variant':<24} {'ms':>9} {'TFLOP/s':>9}")
    for r in rows:
        if "unsupported" in r:
            print(f"{r['kernel']:<15} {r['shape']:<34} {r['variant']:<24} not run: {r['unsupported']}")
        else:
            print(f"{r['kernel']:<15} {r['shape']:<34} {r['variant']:<24} {r['ms']:9.4f} "
                  f"{r['tflops']:9.1f}")


def compare(engine, baseline):
    """Markdown: the engine's bf16 flash rows against cuDNN SDPA, per shape and pass."""
    def times(rows):
        return {(r["kernel"], r["shape"], r["variant"]): r["ms"] for r in rows if "ms" in r}

    def ms(value):
        return f"{value:.4f}" if value else "-"

    ours, theirs = times(engine.get("rows", [])), times(baseline.get("rows", []))
    lines = ["| pass | shape | engine variant | engine ms | cuDNN SDPA ms | cuDNN / engine "
             "| bf16 GEMM floor ms (fwd) |",
             "|---|---|---|---|---|---|---|"]
    shapes = sorted({shape for (_, shape, _) in ours} | {shape for (_, shape, _) in theirs})
    for shape in shapes:
        for kernel in ("attention fwd", "attention bwd"):
            base = theirs.get((kernel, shape, BASELINE))
            floor = ours.get((kernel, shape, FLOOR_VARIANT))
            for variant in ENGINE_VARIANTS:
                mine = ours.get((kernel, shape, variant))
                if mine:
                    ratio = f"{base / mine:.2f}x" if base else "-"
                    lines.append(f"| {kernel.split()[1]} | {shape} | {variant} | {ms(mine)} | "
                                 f"{ms(base)} | {ratio} | {ms(floor)} |")
    for r in baseline.get("rows", []):
        if "unsupported" in r:
            lines.append(f"\n{r['variant']} did not run at {r['shape']}: {r['unsupported']}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--compare", nargs=2, metavar=("KERNEL_BENCH_JSON", "ATTENTION_JSON"))
    args = p.parse_args()
    if args.compare:
        with open(args.compare[0]) as f:
            engine = json.load(f)
        with open(args.compare[1]) as f:
            baseline = json.load(f)
        print(compare(engine, baseline))
        return 0
    rows = measure(args)
    print_rows(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
