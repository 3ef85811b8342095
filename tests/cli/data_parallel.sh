#!/usr/bin/env bash
# `mpirun -np 2 ddpm train` end to end on the CPU: the same checkpoint bytes as one process
# with the same config (4 shards of 2 per step: 2 per rank, or 4 in a row), rank 0 alone
# writes the folder and prints, and ranks that disagree (an MPMD launch with another seed
# on rank 1) exit with the message instead of hanging.
#   tests/cli/data_parallel.sh DDPM CONFIG WORKDIR
set -u
ddpm=$1 config=$2 work=$3
command -v mpirun > /dev/null || { echo "SKIP: no mpirun (scripts/setup.sh installs openmpi-bin)"; exit 0; }
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; tail -n 20 "$work"/*.log 2>/dev/null; exit 1; }
mpi=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=PASSIVE)
args=(--config "$config" --set out_dir="$work/run" --set steps=3 --set batch_size=8
      --set micro_batch=2 --set base_channels=8 --set groups=4 --set dropout=0.1
      --set n_samples=2 --set sample_steps=2 --set ckpt_every=3)
ckpt=$work/run/ckpt/step_00000003.safetensors

OMP_NUM_THREADS=1 "$ddpm" train "${args[@]}" > "$work/one.log" 2>&1 || fail "1 process failed"
cp "$ckpt" "$work/one.safetensors"
"${mpi[@]}" -np 2 "$ddpm" train "${args[@]}" --overwrite > "$work/two.log" 2>&1 || fail "2 ranks failed"
grep -q "data-parallel: MPI, 2 ranks" "$work/two.log" || fail "rank 0 does not say it runs 2 ranks"
[ "$(grep -c '^training the U-Net' "$work/two.log")" -eq 1 ] || fail "more than one rank printed"
cmp "$ckpt" "$work/one.safetensors" || fail "2 ranks wrote other bytes than 1 process"
grep -q '"ranks": "MPI, 2 ranks' "$work/run/run.json" || fail "run.json does not record the ranks"

"${mpi[@]}" -np 1 "$ddpm" train "${args[@]}" --set out_dir="$work/bad" : \
            -np 1 "$ddpm" train "${args[@]}" --set out_dir="$work/bad" --set seed=1 \
  > "$work/disagree.log" 2>&1 && fail "ranks with different seeds trained"
grep -q "the 2 ranks disagree on the resolved config (rank 1 has seed 1, rank 0 has 0)" "$work/disagree.log" || fail "no disagreement message"
echo "PASS: 2 ranks == 1 process, bit for bit; disagreeing ranks stop with the message"
