#!/usr/bin/env bash
# scripts/cpu-vs-pytorch.sh --summarise: the table docs/cpu-path.md quotes, from made-up
# rounds. Needs no torch. Checks that
#   - the engine's median is over cpu-bench's "fast" rows only: cpu-bench step also writes
#     "fast, OpenBLAS GEMMs" and "fast, upsample then conv" rows beside them, which the
#     sampling median once mixed in (2026-12-07);
#   - PyTorch's is its faster layout's median over the rounds, and the ratio engine / PyTorch;
#   - a config without sampling rows prints no sampling line;
#   - a bad command line gets the usage.
#   tests/cli/cpu_vs_pytorch.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
python3 - "$work" <<'PY' || fail "could not write the made-up rounds"
import json, sys
out = sys.argv[1]
def row(op, variant, ms):
    return {"op": op, "shape": "made up", "variant": variant, "ms": ms}
for config, base in (("tiny.json", 30.0), ("fashion.json", 100.0), ("cifar10_ddpm.json", 400.0)):
    for r in (1, 2, 3):
        rows = [row("train step", "fast", base + r - 2),  # medians: base, and 10 x base
                row("train step", "fast, OpenBLAS GEMMs", 5 * base + r),
                row("train step", "fast, upsample then conv", 6 * base + r)]
        if config != "cifar10_ddpm.json":
            rows += [row("sample", "fast", 10 * base + r - 2),
                     row("sample", "fast, OpenBLAS GEMMs", 50 * base + r)]
            for layout, t in (("nhwc", 40 * base), ("nchw", 20 * base)):
                json.dump({"ms_per_step": t + 2 * (r - 2)},
                          open(f"{out}/torchsample-{layout}-{config}-{r}.json", "w"))
        json.dump(rows, open(f"{out}/engine-{config}-{r}.json", "w"))
        for layout, t in (("nhwc", 2 * base), ("nchw", 4 * base)):
            json.dump({"ms_per_step": t - 3 * (r - 2)},
                      open(f"{out}/torch-{layout}-{config}-{r}.json", "w"))
PY
bash "$src/scripts/cpu-vs-pytorch.sh" --summarise "$work" 3 2 > "$work/table.txt" ||
  fail "--summarise failed"
cat "$work/table.txt"
expect() {  # expect CONFIG WHAT ENGINE TORCH RATIO LAYOUT
  grep -qE "^$1 +$2 +$3 +$4 +$5 +$6\$" "$work/table.txt" || fail "no row '$*'"
}
expect tiny.json "training step" 30.0 60.0 0.50 nhwc
expect tiny.json "sample 16, 50 DDIM steps" 300.0 600.0 0.50 nchw
expect fashion.json "training step" 100.0 200.0 0.50 nhwc
expect fashion.json "sample 16, 50 DDIM steps" 1000.0 2000.0 0.50 nchw
expect cifar10_ddpm.json "training step" 400.0 800.0 0.50 nhwc
[ "$(grep -c '^cifar10_ddpm.json' "$work/table.txt")" = 1 ] ||
  fail "a sampling line for cifar10_ddpm.json, which has no sampling rows"
# a bad command line: the usage, not a shell error
bash "$src/scripts/cpu-vs-pytorch.sh" --summarise "$work/none" 3 2 > "$work/bad.txt" 2>&1 &&
  fail "--summarise of a missing folder succeeded"
grep -q "usage: --summarise DIR ROUNDS THREADS" "$work/bad.txt" ||
  fail "--summarise of a missing folder: $(cat "$work/bad.txt")"
echo "PASS: the table from made-up rounds, and the usage for a bad line"
