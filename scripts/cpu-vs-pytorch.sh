#!/usr/bin/env bash
# The engine's CPU training step and sampling beside PyTorch's, same model, same threads,
# runs interleaved (engine, PyTorch, engine, ...) so a noisy neighbour hits both alike; the
# medians go to docs/cpu-path.md. Needs a build (scripts/build.sh) and PyTorch for the system
# Python (Debian: apt install python3-torch); not part of the tests.
#
#   scripts/cpu-vs-pytorch.sh [ROUNDS (3)] [THREADS (2)]
#   scripts/cpu-vs-pytorch.sh --summarise DIR ROUNDS THREADS   # the table from DIR's files
#     (engine-CONFIG-ROUND.json: cpu-bench's rows; torch[sample]-LAYOUT-CONFIG-ROUND.json:
#     pytorch_reference.py's), as tests/cli/cpu_vs_pytorch.sh runs it
set -euo pipefail
cd "$(dirname "$0")/.."

# summarise DIR ROUNDS THREADS: the table, from the rounds' JSON files in DIR (any python3)
summarise() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    return json.load(open(f"{out}/{name}"))
def torch_ms(kind, config):
    """PyTorch's median over the rounds in its faster layout, and that layout."""
    best = min((statistics.median(load(f"{kind}-{layout}-{config}-{r}.json")["ms_per_step"]
                                  for r in range(1, rounds + 1)), layout)
               for layout in ("nhwc", "nchw"))
    return best
print(f"{'config':<20} {'what':<26} {'engine ms':>10} {'PyTorch ms':>11} {'ratio':>6}  layout"
      f"   ({rounds} rounds, {threads} threads, medians; PyTorch in its faster layout)")
for config in ("tiny.json", "fashion.json", "cifar10_ddpm.json"):
    rows = [load(f"engine-{config}-{r}.json") for r in range(1, rounds + 1)]
    # the engine's own rows: variant "fast" (cpu-bench step also times other variants,
    # the upsamplers unfused and OpenBLAS's GEMMs, beside it)
    def engine(op, rs):
        return [x["ms"] for x in rs if x["op"] == op and x["variant"] == "fast"]
    step = statistics.median(ms for rs in rows for ms in engine("train step", rs))
    torch, layout = torch_ms("torch", config)
    print(f"{config:<20} {'training step':<26} {step:10.1f} {torch:11.1f} {step / torch:6.2f}  {layout}")
    samples = [ms for rs in rows for ms in engine("sample", rs)]
    if samples:
        s = statistics.median(samples)
        t, layout = torch_ms("torchsample", config)
        print(f"{config:<20} {'sample 16, 50 DDIM steps':<26} {s:10.1f} {t:11.1f} {s / t:6.2f}  {layout}")
PY
}
if [[ ${1:-} == --summarise ]]; then
  [[ $# == 4 && -d $2 ]] || {
    echo "cpu-vs-pytorch: usage: --summarise DIR ROUNDS THREADS (DIR: a folder of a run's files)"
    exit 2
  }
  summarise "$2" "$3" "$4"
  exit
fi
rounds=${1:-3}
threads=${2:-2}
py=/usr/bin/python3
$py -c "import torch" 2>/dev/null || { echo "cpu-vs-pytorch: no PyTorch for $py (apt install python3-torch)"; exit 1; }
export OMP_NUM_THREADS=$threads
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# config batch sample? (sampling: 16 images, 50 DDIM steps)
cases=("tiny.json 16 yes" "fashion.json 32 yes" "cifar10_ddpm.json 4 no")
for ((r = 1; r <= rounds; ++r)); do
  for c in "${cases[@]}"; do
    read -r config batch sample <<<"$c"
    params=$(build/apps/ddpm info --config "configs/$config" | awk '/^parameters:/{print $2}')
    build/apps/cpu-bench step --config "$config" --kernels fast --threads "$threads" --reps 5 \
      --json "$out/engine-$config-$r.json" >/dev/null
    for layout in nhwc nchw; do  # PyTorch in both layouts; the faster one is compared
      flag=$([[ $layout == nchw ]] && echo --nchw || true)
      $py scripts/pytorch_reference.py --device cpu --threads "$threads" --config "configs/$config" \
        --batch "$batch" --steps 5 --warmup 2 --expect-params "$params" $flag \
        --json "$out/torch-$layout-$config-$r.json" >/dev/null
      if [[ $sample == yes ]]; then
        $py scripts/pytorch_reference.py --device cpu --threads "$threads" --config "configs/$config" \
          --batch 16 --steps 2 --warmup 1 --sample-steps 50 --expect-params "$params" $flag \
          --json "$out/torchsample-$layout-$config-$r.json" >/dev/null
      fi
    done
  done
done

summarise "$out" "$rounds" "$threads"
