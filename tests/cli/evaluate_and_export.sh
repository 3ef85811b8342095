#!/usr/bin/env bash
# The judging tools end to end on a few-step run of the synthetic data: training with
# bits/dim in its log and a report; `ddpm eval` (stratified) with its JSON; `ddpm sample
# --format npz|png`; `ddpm export` of the test split; the npz files read back by NumPy (when
# the system Python has it) as uint8 (N, 32, 32, 3) under arr_0, the same bytes as the PNGs.
#   tests/cli/evaluate_and_export.sh DDPM CONFIG WORKDIR
set -u
ddpm=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; cat "$work"/*.log 2>/dev/null; exit 1; }
"$ddpm" train --config "$config" --set out_dir="$work/run" --set steps=4 --set batch_size=4 \
  --set log_every=2 --set n_samples=4 --set sample_steps=2 --set eval_every=2 \
  --set eval_images=6 --set eval_timesteps=3 > "$work/train.log" 2>&1 || fail "training failed"
grep -q "bits/dim on the test split" "$work/train.log" || fail "no bits/dim at the end of training"
[ "$(grep -c bits_per_dim "$work/run/metrics.jsonl")" -eq 2 ] || fail "bits/dim not logged at steps 2 and 4"
[ -s "$work/run/report.html" ] || fail "no report"
[ -s "$work/run/samples/progressive.png" ] || fail "no progressive strip"
ckpt=$work/run/ckpt/step_00000004.safetensors
"$ddpm" eval --ckpt "$ckpt" --n 5 --timesteps 4 --batch 2 --json "$work/eval.json" > "$work/eval.log" 2>&1 \
  || fail "ddpm eval failed"
grep -q '"images": 5' "$work/eval.json" || fail "eval.json lacks the image count"
grep -q '"bits_per_dim"' "$work/eval.json" || fail "eval.json lacks bits_per_dim"
"$ddpm" eval --ckpt "$ckpt" --timesteps 5000 > "$work/bad.log" 2>&1 && fail "eval accepted --timesteps 5000"
grep -q "option '--timesteps' must be in \[0, 999\], got 5000" "$work/bad.log" \
  || fail "the bad --timesteps is not refused by its range"
"$ddpm" sample --ckpt "$ckpt" --format npz --n 5 --batch 2 --steps 2 --out "$work/s.npz" > "$work/sample.log" 2>&1 \
  || fail "sample --format npz failed"
"$ddpm" sample --ckpt "$ckpt" --format png --n 5 --batch 2 --steps 2 --out "$work/s_png" >> "$work/sample.log" 2>&1 \
  || fail "sample --format png failed"
[ "$(ls "$work/s_png" | wc -l)" -eq 5 ] || fail "not 5 PNGs"
# three batches (2, 2, 1) from seeds seed + b 2^32: five different images, no batch drawing
# another's noise again
[ "$(md5sum "$work"/s_png/* | cut -d' ' -f1 | sort -u | wc -l)" -eq 5 ] \
  || fail "the 5 exported PNGs are not 5 different images (a batch repeated another's noise?)"
"$ddpm" sample --ckpt "$ckpt" --format png --n 5 --out "$work/s_png" > "$work/again.log" 2>&1 && fail "png export into a full folder"
grep -q "not empty" "$work/again.log" || fail "the full folder is not named"
"$ddpm" export --config "$config" --split test --n 7 --out "$work/ref.npz" > "$work/export.log" 2>&1 \
  || fail "export failed"
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  /usr/bin/python3 - "$work" <<'PY' || fail "NumPy disagrees"
import sys, numpy as np
w = sys.argv[1]
for name, n in (("s.npz", 5), ("ref.npz", 7)):
    z = np.load(f"{w}/{name}")
    assert list(z.keys()) == ["arr_0"], z.keys()
    a = z["arr_0"]
    assert a.dtype == np.uint8 and a.shape == (n, 32, 32, 3), (name, a.dtype, a.shape)
    assert a.std() > 0, name
    assert len({a[i].tobytes() for i in range(n)}) == n, (name, "repeated images")
print("numpy: arr_0 uint8 (N, 32, 32, 3) in both")
PY
  checked="read back by NumPy"
else
  checked="NumPy absent: the npz layout is checked by test_data_files only"
fi
echo "PASS: bits/dim logged and evaluated, samples and the test split exported ($checked)"
