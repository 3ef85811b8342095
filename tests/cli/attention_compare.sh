#!/usr/bin/env bash
# scripts/attention_reference.py --compare: the table gpu-check's report sets the engine's
# flash attention against cuDNN SDPA with. Needs no GPU and no torch. Checks that
#   - the names it joins on are kernel-bench's (apps/bench/attention_bench.cpp), so a renamed
#     row cannot silently drop out of the comparison;
#   - the ratio is cuDNN's time over the engine's, per shape and pass, with the bf16 floor;
#   - a shape cuDNN refused is named with its reason.
#   tests/cli/attention_compare.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
bench="$src/apps/bench/attention_bench.cpp"
names=$(PYTHONDONTWRITEBYTECODE=1 python3 -c "import sys; sys.path.insert(0, '$src/scripts'); import attention_reference as a
print('\n'.join(a.ENGINE_VARIANTS + [a.FLOOR_VARIANT] + [c[0] for c in a.CASES]))") ||
  fail "the script does not import without torch"
while IFS= read -r name; do
  grep -qF "\"$name\"" "$bench" || fail "'$name' is not a name kernel-bench writes ($bench)"
done <<< "$names"
grep -qF '"%s B%lld L%lld d%lld"' "$bench" || fail "kernel-bench's shape format changed"
shape="16x16, 1 head B128 L256 d256"  # the rows of tests/cli/data/ (a GPU run's, made up)
data="$src/tests/cli/data"
python3 "$src/scripts/attention_reference.py" --compare "$data/kernel-bench-attention.json" \
  "$data/attention-pytorch.json" > "$work/table.md" || fail "--compare failed"
cat "$work/table.md"
grep -qF "| fwd | $shape | flash bf16 (mma.sync), bf16 tensors | 0.4000 | 0.3000 | 0.75x | 0.2500 |" \
  "$work/table.md" || fail "the forward row (0.3 / 0.4 = 0.75x, floor 0.25) is not in the table"
grep -qF "| bwd | $shape | flash bf16 (mma.sync), bf16 tensors | 1.5000 | 1.2000 | 0.80x | - |" \
  "$work/table.md" || fail "the backward row (1.2 / 1.5 = 0.80x) is not in the table"
grep -qF "did not run at 32x32, 4 heads B128 L1024 d32: No available kernel" "$work/table.md" ||
  fail "the refused shape is not named"
[ "$(grep -c '^| [fb]' "$work/table.md")" = 2 ] || fail "rows other than the two expected"
echo "PASS: attention comparison"
