#!/usr/bin/env bash
# Two trainers in one out_dir: the second fails at once with a message, the first is
# unharmed and still owns the folder.
#   tests/cli/shared_folder.sh DDPM CONFIG WORKDIR
set -u
ddpm=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; cat "$work"/*.log; exit 1; }
args=(--config "$config" --set out_dir="$work/run" --set steps=100000 --set batch_size=8
      --set log_every=1 --set n_samples=2 --set sample_steps=2)
"$ddpm" train "${args[@]}" > "$work/first.log" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do grep -q '"step"' "$work/run/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
"$ddpm" train "${args[@]}" --overwrite > "$work/second.log" 2>&1
code=$?
kill -TERM $pid
wait $pid
first=$?
[ $code -eq 1 ] || fail "the second trainer exited $code, expected 1"
grep -q "is in use by another trainer (pid $pid)" "$work/second.log" || fail "no clear message"
[ $first -eq 143 ] || fail "the first trainer exited $first after SIGTERM, expected 143"
grep -q "interrupted after" "$work/first.log" || fail "the first trainer did not stop cleanly"
echo "PASS: the second trainer was refused; the first stopped cleanly on SIGTERM"
