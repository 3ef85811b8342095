#!/usr/bin/env bash
# scripts/predictions.py: the kernel times predicted without a GPU, against a kernel-bench
# run. Needs no GPU. Checks that
#   - every row it names is one kernel-bench writes: each variant a name in apps/bench/*.cpp,
#     each (kernel, shape) one the H200 run wrote (docs/gpu-runs/), so that a renamed row
#     cannot silently turn into "not run";
#   - each place it cites is a file of the repository;
#   - its verdicts: inside the range "held", below it "faster" and above it "slower" by the
#     nearer end, a missing row "not run", a row timed twice taken the first time, and the
#     count of those that held;
#   - a run on another GPU or batch is compared under a line that says so, and an unreadable
#     file is refused by name.
#   tests/cli/predictions.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
run="$src/docs/gpu-runs/2026-12-04/kernel-bench.json"
PYTHONDONTWRITEBYTECODE=1 python3 - "$src" "$run" <<'PY' || fail "the names do not check out"
import json, os, sys
src, run = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "scripts"))
import predictions as p
sources = "".join(open(os.path.join(src, "apps/bench", f)).read()
                  for f in os.listdir(os.path.join(src, "apps/bench")) if f.endswith(".cpp"))
written = {(r["kernel"], r["shape"]) for r in json.load(open(run))["rows"]}
bad = []
for kernel, shape, variant, (low, high), where in p.PREDICTIONS:
    if f'"{variant}"' not in sources:
        bad.append(f"variant '{variant}' is not a name kernel-bench writes")
    if (kernel, shape) not in written:
        bad.append(f"'{kernel}' at '{shape}' is not a row the H200 run wrote")
    if not os.path.exists(os.path.join(src, where.split(",")[0])):
        bad.append(f"'{where}' names no file")
    if not 0 <= low < high:
        bad.append(f"'{variant}' at '{shape}': the range {low}-{high} is empty")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
# a run of four of the predicted rows: one inside its range, one below, one above, one
# timed twice (the first time counts); the rest not run
python3 - "$work/run.json" <<'PY'
import json, sys
rows = [
    ("conv2d dgrad", "downsample 32x32 128->128", "v4 bf16, bf16 activations", 0.055),
    ("conv2d wgrad", "res 32x32 32x32 128->128", "v4 bf16, bf16 activations", 0.06),
    ("loss fwd+bwd", "(64, 256, 256, 3) epsilon", "fused", 0.088),
    ("attention bwd", "16x16, 1 head B128 L256 d256",
     "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS", 0.25),
    ("attention bwd", "16x16, 1 head B128 L256 d256",
     "flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS", 0.5),
]
json.dump({"device": "NVIDIA H200", "batch": 128,
           "rows": [{"kernel": k, "shape": s, "variant": v, "ms": ms} for k, s, v, ms in rows]},
          open(sys.argv[1], "w"))
PY
python3 "$src/scripts/predictions.py" "$work/run.json" > "$work/table.md" ||
  fail "the script failed"
cat "$work/table.md"
for row in \
    "| conv2d dgrad | downsample 32x32 128->128 | v4 bf16, bf16 activations | 0.050-0.060 | 0.0550 | held |" \
    "| conv2d wgrad | res 32x32 32x32 128->128 | v4 bf16, bf16 activations | 0.120-0.200 | 0.0600 | faster (2.00x the range's low end) |" \
    "| loss fwd+bwd | (64, 256, 256, 3) epsilon | fused | 0.026-0.044 | 0.0880 | slower (2.01x its high end) |" \
    "| attention bwd | 16x16, 1 head B128 L256 d256 | flash bf16 (mma.sync), bf16 tensors, dq by cuBLAS | 0.240-0.260 | 0.2500 | held |" \
    "| conv2d fwd | res 32x32 32x32 128->128 | v2 tiled | at most 2.090 | - | not run |" \
    "2 of 24 predictions held."; do
  grep -qF -- "$row" "$work/table.md" || fail "not in the table: $row"
done
grep -q "^The predictions are for" "$work/table.md" && fail "an H200 run at batch 128 is told it is another"
sed -i 's/NVIDIA H200/NVIDIA H100 80GB HBM3/' "$work/run.json"
python3 "$src/scripts/predictions.py" "$work/run.json" | grep -qF \
  "The predictions are for an H200 at batch 128; this run: NVIDIA H100 80GB HBM3, batch 128." ||
  fail "a run on another GPU is not named"
python3 "$src/scripts/predictions.py" "$work/missing.json" > /dev/null 2> "$work/err.txt" &&
  fail "a missing file was taken"
grep -qF "predictions.py: cannot read $work/missing.json" "$work/err.txt" ||
  fail "the refusal does not name the file: $(cat "$work/err.txt")"
echo "PASS: predictions"
