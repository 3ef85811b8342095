#!/usr/bin/env bash
# `ddpm train` and signals. SIGINT or SIGTERM: the run finishes its step, writes a checkpoint,
# says how to resume and exits 130 or 143 (128 + the signal's number); `--resume latest` then
# continues from that checkpoint. A second SIGINT quits at once, without the first's
# checkpoint.
#   tests/cli/signals.sh DDPM CONFIG WORKDIR
set -u
ddpm=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; cat "$f"; done; exit 1; }
run_args() {  # a run slow enough to be caught mid-step, long enough never to finish
  echo --config "$config" --set out_dir="$1" --set steps=100000 --set batch_size=8 \
    --set log_every=1 --set n_samples=2 --set sample_steps=2
}
wait_for_step() {
  for _ in $(seq 1 1200); do
    grep -q '"step"' "$1/metrics.jsonl" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no step logged in $1"
}

# one signal: a checkpoint, a message, exit 128 + the signal's number, and a run that resumes
stop_and_resume() {  # SIGNAL EXPECTED_EXIT RUN_NAME
  local run=$work/$3
  "$ddpm" train $(run_args "$run") > "$run.log" 2>&1 &
  local pid=$!
  wait_for_step "$run"
  kill -"$1" $pid
  wait $pid
  local code=$?
  [ $code -eq "$2" ] || fail "exit $code after SIG$1, expected $2"
  grep -q "resume with: ddpm train --config $config --resume $run/ckpt/step_" "$run.log" ||
    fail "no resume hint after SIG$1"
  local ckpt
  ckpt=$(ls "$run"/ckpt/step_*.safetensors | tail -1)
  step=$((10#$(basename "$ckpt" .safetensors | sed 's/step_//')))
  [ "$step" -ge 1 ] || fail "checkpoint step $step after SIG$1"
  "$ddpm" train $(run_args "$run") --set steps=$((step + 2)) --resume latest > "$run-resume.log" 2>&1 ||
    fail "resume after SIG$1 failed"
  grep -q "resumed .*step_.* at step $step" "$run-resume.log" || fail "did not resume at step $step"
  [ -f "$run/ckpt/$(printf 'step_%08d' $((step + 2))).safetensors" ] || fail "no final checkpoint"
}
stop_and_resume INT 130 a
stop_and_resume TERM 143 t  # what a batch scheduler sends before it kills a job

# two signals: the second ends the process at once. It is sent once the first has been
# handled (its message is in the log: two signals still pending are delivered as one), into
# steps of batch 32 (~0.6 s on 2 cores), so the run cannot finish its step first.
"$ddpm" train $(run_args "$work/b") --set batch_size=32 > "$work/b.log" 2>&1 &
pid=$!
wait_for_step "$work/b"
kill -INT $pid
for _ in $(seq 1 1000); do grep -q "signal again" "$work/b.log" && break; sleep 0.005; done
kill -INT $pid
wait $pid
code=$?
[ $code -eq 130 ] || fail "exit $code after two SIGINTs, expected 130"
grep -q "signal again to quit at once" "$work/b.log" || fail "the first signal said nothing"
grep -q "interrupted after" "$work/b.log" && fail "the second signal did not quit at once"
echo "PASS: SIGINT and SIGTERM checkpoint and resume; a second SIGINT quits at once"
