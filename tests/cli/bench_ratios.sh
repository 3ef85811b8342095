#!/usr/bin/env bash
# scripts/bench_ratios.py: the GPU report's table of each kernel against its previous version
# and its library (cuDNN, the cuBLAS floors). Needs no GPU. Checks that
#   - every variant it names is a name kernel-bench writes (apps/bench/*.cpp), so a renamed
#     row cannot silently drop out of the report;
#   - the ratios are the other row's time over this row's, per kernel and shape, with "-"
#     where the other row did not run, and the first present of a list of candidates;
#   - a kernel-bench run stopped before its last section says so.
#   tests/cli/bench_ratios.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
names=$(PYTHONDONTWRITEBYTECODE=1 python3 -c "import sys; sys.path.insert(0, '$src/scripts')
import bench_ratios as b
for (_, variant), pair in b.RULES.items():
    for name in (variant,) + pair:
        for n in (name,) if isinstance(name, str) else name or ():
            print(n)") || fail "the script does not import"
while IFS= read -r name; do
  cat "$src"/apps/bench/*.cpp | grep -qF "\"$name\"" || fail "'$name' is not a name kernel-bench writes"
done <<< "$names"
python3 "$src/scripts/bench_ratios.py" "$src/tests/cli/data/kernel-bench-conv.json" \
  > "$work/table.md" || fail "the script failed"
cat "$work/table.md"
shape="res 16x16 16x16 256->256"
for row in \
    "| conv2d fwd | $shape | v3 TF32 tensor cores | 2.0000 | 60.00 TFLOP/s | 12.0% | - | - | 0.75x | cuDNN TF32 |" \
    "| conv2d fwd | $shape | v4 bf16 (128x128 tiles) | 1.0000 | 120.00 TFLOP/s | 12.0% | 2.00x | v3 TF32 tensor cores | 0.80x | cuDNN bf16 |" \
    "| conv2d fwd | $shape | v4 bf16, bf16 activations and weight copy | 0.8500 | 141.00 TFLOP/s | 14.0% | 1.06x | v4 bf16, bf16 activations | 0.94x | cuDNN bf16 |" \
    "| group_norm bwd (dx) | 128x16x16x256 | channel slab | 0.8000 | 125.00 GB/s | 3.0% | 1.25x | block per group | - | - |" \
    "| group_norm bwd (dx) | 128x16x16x256 | block per group, bf16 storage | 0.5000 | 100.00 GB/s | 2.0% | 2.00x | block per group | - | - |" \
    "| group_norm bwd (dx) | 128x16x16x256 | channel slab, bf16 storage | 0.2500 | 200.00 GB/s | 4.0% | 2.00x | block per group, bf16 storage | - | - |"; do
  grep -qF -- "$row" "$work/table.md" || fail "not in the table: $row"
done
[ "$(grep -c '^| conv2d\|^| group_norm' "$work/table.md")" = 7 ] ||
  fail "rows other than the seven with a rule (not the libraries' own, nor the first group norm's)"
grep -qF "stopped before its last section" "$work/table.md" || fail "the stopped run is not named"
echo "PASS: bench ratios"
