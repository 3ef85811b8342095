#!/usr/bin/env bash
# scripts/gpu-session.sh, the device call's wrapper of gpu-check.sh, off the GPU: it refuses
# a call without its seconds, its stages or the tool's OUT folder, naming what is missing;
# and on a folder of outputs as a GPU call leaves them (a training run's checkpoint and
# sample grid among them) its report stage writes report.md and packs the folder into
# OUT/gc.tgz without the checkpoint and the training run's grid, report.md beside it.
#   tests/cli/gpu_session.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/out" "$work/gc/train-run-bf16/ckpt" \
  "$work/gc/train-run-bf16/samples"
fail() { echo "FAIL: $*"; exit 1; }
session="$src/scripts/gpu-session.sh"
expect_refusal() {  # expect_refusal MESSAGE ARGS...: exit 2 and MESSAGE on stderr
  local message=$1 err
  shift
  err=$(env "$@" 2>&1 > /dev/null)
  [ $? = 2 ] || fail "not refused: $*"
  grep -qF -- "$message" <<< "$err" || fail "refused without '$message': $err"
}
expect_refusal "SECONDS must be a whole number, got '9m'" OUT="$work/out" bash "$session" 9m report
expect_refusal "name the stages" OUT="$work/out" bash "$session" 60
err=$(env -u OUT bash "$session" 60 report 2>&1 > /dev/null) && fail "ran without OUT"
grep -qF "OUT is not set (the folder the device tool brings back)" <<< "$err" || fail "no OUT: $err"
echo "build exit 0" > "$work/gc/build.status"
echo "step 10 | loss 0.1 | 812.5 img/s" > "$work/gc/train.log"
head -c 4096 /dev/urandom > "$work/gc/train-run-bf16/ckpt/step_00000030.safetensors"
echo png > "$work/gc/train-run-bf16/samples/step_30.png"
echo png > "$work/gc/samples-bf16.png"
OUT="$work/out" DDPM_GPU_SESSION_DIR="$work/gc" bash "$session" 60 report \
  > "$work/stdout.txt" 2>&1 ||
  fail "the report call failed: $(tail -5 "$work/stdout.txt")"
[ -f "$work/out/report.md" ] || fail "no report.md in OUT"
grep -qF "build: build exit 0" "$work/out/report.md" || fail "report.md without the build's status"
listing=$(tar -tzf "$work/out/gc.tgz") || fail "gc.tgz is not a gzip tarball"
for f in ./report.md ./report.json ./train.log ./samples-bf16.png; do
  grep -qxF "$f" <<< "$listing" || fail "$f not packed: $listing"
done
grep -qF ".safetensors" <<< "$listing" && fail "a checkpoint packed: $listing"
grep -qF "step_30.png" <<< "$listing" && fail "a training run's grid packed: $listing"
echo "PASS: gpu-session"
