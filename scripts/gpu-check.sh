#!/usr/bin/env bash
# The GPU check: on a machine with a GPU, build for its architecture, run every test, run the
# CUDA tests under compute-sanitizer, run the kernel benchmark and a short training benchmark
# of the CIFAR-10 model (and the same step in PyTorch when it is installed), and write a
# report (JSON + Markdown) into OUT_DIR. The report also lists what each GPU test printed
# beside its verdict (its margin against its bound, cuDNN's algorithms), passed or failed.
#
#   scripts/gpu-check.sh OUT_DIR [stage ...]     stages: build test sanitize bench profile
#                                                train sample report (default: all, in order),
#                                                and test-cpu (the tests without CUDA)
# profile: Nsight Compute (ncu, when installed) on the fused-loss section of kernel-bench,
# the DRAM bytes each loss kernel really moved (docs/fused-loss.md explains the figures); on
# the tensor-core kernels' tests, their shared-memory bank conflicts; and on conv v4 and v5
# at the model's 32x32 layer, the direct kernels at its last (128 -> 3) and the flash
# attention kernels at its head, where their time goes (throughput, occupancy, warp stalls),
# and for the convolutions where their bytes come from (L1 hits, L2 traffic).
# Offline machines: run scripts/prepare-gpu-deps.sh where packages can be installed and bring
# deps/ along; cuDNN is taken from the system or, failing that, from PyTorch's nvidia-cudnn
# wheel. Stages can run in separate calls (each under a time limit): outputs accumulate in
# OUT_DIR and the build in build-gpu/.
# DDPM_GPU_SECONDS: the seconds this call may take (a device's limit per call). Every long
# command then runs under what is left of them, less 30 s kept for the report; a stage that
# finds no time left is skipped and named in OUT_DIR/skipped.status. So one scripted call
# ends with its report written, whichever stage ran long. DDPM_TEST_TIMEOUT,
# DDPM_BENCH_TIMEOUT, DDPM_BENCH_SM90_TIMEOUT: caps on the test and bench stages;
# DDPM_TRAIN_STEPS: steps per training run (30); DDPM_PYTORCH=0: no PyTorch runs.
set -uo pipefail
cd "$(dirname "$0")/.."
# A CUDA test that finds no usable device fails instead of skipping (tests/test_util.h).
export DDPM_REQUIRE_GPU=1
out="${1:?usage: scripts/gpu-check.sh OUT_DIR [stage ...]}"
shift
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(build test sanitize bench profile train sample report)
for var in DDPM_GPU_SECONDS DDPM_BENCH_TIMEOUT DDPM_BENCH_SM90_TIMEOUT DDPM_TEST_TIMEOUT \
    DDPM_TRAIN_STEPS; do
  if [ -n "${!var:-}" ] && ! [[ "${!var}" =~ ^[0-9]+$ ]]; then
    echo "gpu-check: $var must be a whole number of seconds, got '${!var}'" >&2
    exit 2
  fi
done
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the test stages write it from inside the build folder
build=${DDPM_GPU_BUILD_DIR:-build-gpu}  # another folder: tests/cli/gpu_check_report.sh's stand-ins

# cuDNN from PyTorch's wheel, where the system has none: its folder for the build (run_build)
# and its libraries for every stage (libcudnn loads its engines by name at run time)
cudnn_wheel=""
if [ ! -f /usr/include/cudnn.h ] && [ ! -f /usr/local/cuda/include/cudnn.h ]; then
  # the wheel's package may be a namespace package (no __file__): its first path
  cudnn_wheel=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2> /dev/null)
  [ -n "$cudnn_wheel" ] &&
    export LD_LIBRARY_PATH="$cudnn_wheel/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

deadline=$(($(date +%s) + ${DDPM_GPU_SECONDS:-1000000000}))
seconds_left() { echo $((deadline - $(date +%s) - 30)); }
# within CAP COMMAND...: COMMAND under `timeout`, at most CAP seconds and at most what is left
# (exit 124 when stopped, as timeout's).
within() {
  local cap=$1 left
  shift
  left=$(seconds_left)
  [ "$left" -lt "$cap" ] && cap=$left
  [ "$cap" -gt 0 ] || return 124
  timeout "$cap" "$@"
}

# Whether PyTorch is importable here and sees the GPU (its reference runs need both).
torch_on_gpu() {
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null
}

run_build() {
  local arch cudnn_args=() deps_args=()
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
  [ -n "$cudnn_wheel" ] && cudnn_args=(-DCUDNN_ROOT="$cudnn_wheel")
  [ -d deps ] && deps_args=(-DDDPM_DEPS_DIR="$PWD/deps")
  echo "gpu-check: building for sm_$arch ${cudnn_args[*]:-} ${deps_args[*]:-}"
  # the CPU emulation of CUDA (tests/cuda_emulation) is for machines without a GPU: left out
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DDDPM_EMULATION=OFF "${cudnn_args[@]}" "${deps_args[@]}" > "$out/configure.log" 2>&1 &&
    within 900 cmake --build "$build" -j "$(nproc)" -- -k 0 > "$out/build.log" 2>&1
  echo "build exit $?" | tee "$out/build.status"
}

# test: the tests that need the GPU (every CUDA suite, kernel-bench's smoke rows, NCCL's
# world of one; by name, the regex below), 8 at a time: their CPU references take the cores.
# test-cpu: the others (about 300, which CI runs on every change), when minutes are left.
gpu_tests='Cuda|BenchSmoke|Nccl'
run_tests() {
  (cd "$build" && within "${DDPM_TEST_TIMEOUT:-900}" ctest -R "$gpu_tests" --output-on-failure \
    --timeout 300 -j 8 > "$out/ctest.log" 2>&1)
  echo "ctest (GPU tests) exit $?" | tee "$out/ctest.status"
  grep -E "tests passed|tests failed" "$out/ctest.log"
  # what each test printed beside its verdict (margins against bounds, cuDNN's algorithms,
  # launches and memory), passed or failed: ctest's log keeps it all
  python3 scripts/test_measurements.py "$build/Testing/Temporary/LastTest.log" \
    > "$out/ctest-measured.txt" 2>&1
}

run_tests_cpu() {
  (cd "$build" && within 900 ctest -E "$gpu_tests" --output-on-failure -j "$(nproc)" \
    > "$out/ctest-cpu.log" 2>&1)
  echo "ctest (CPU tests) exit $?" | tee "$out/ctest-cpu.status"
  grep -E "tests passed|tests failed" "$out/ctest-cpu.log"
}

# sanitize TOOL SUITE [GTEST_FILTER]: one compute-sanitizer run at small shapes
# (DDPM_TEST_SMALL_SHAPES: the awkward shapes, not the model's; what the CPU emulation runs)
# under a time limit, so that one slow suite cannot take a session's minutes; its output in
# sanitizer.log, its exit status in sanitizer.status (124: it ran out of time). The tests fill
# new memory with NaN bytes (tests/main.cpp), except under initcheck, which must find the
# memory a kernel reads before writing uninitialised.
sanitize() {
  local tool=$1 suite=$2 filter=${3:-*} poison=1
  [ "$tool" = initcheck ] && poison=0
  echo "== $tool $suite" >> "$out/sanitizer.log"
  DDPM_POISON_MEMORY=$poison DDPM_TEST_SMALL_SHAPES=1 within 240 \
    compute-sanitizer --tool "$tool" --error-exitcode 1 \
    "$build/tests/$suite" --gtest_filter="$filter" >> "$out/sanitizer.log" 2>&1
  echo "$tool $suite exit $?" | tee -a "$out/sanitizer.status"
}

# memcheck on every CUDA suite; racecheck, synccheck and initcheck on the kernels with shared
# memory and barriers: conv2d (tiles; v4's cp.async pipeline), group norm and reductions
# (block trees), the attentions (tiles, online softmax; the bf16 flash pair), the fused loss
# (block trees); initcheck also on a backward whose first gradients are written into
# uninitialised buffers (*ZeroFills*: a kernel that read one would show). These tools
# replay every shared-memory access: small shapes only.
run_sanitize() {
  : > "$out/sanitizer.log"
  for t in test_cuda_ops test_cuda_conv_bf16 test_cuda_conv_cudnn test_cuda_attention_bf16 \
      test_cuda_bf16_storage test_cuda_group_norm_bf16 test_cuda_weight_copy test_cuda_model \
      test_cuda_graph test_cuda_scaffold test_philox test_diffusion_loss; do
    sanitize memcheck "$t"
  done
  for tool in racecheck synccheck initcheck; do
    sanitize "$tool" test_cuda_ops '*Conv2d*:*GroupNorm*:*Reductions*:*Attention*:*ZeroFills*'
    sanitize "$tool" test_cuda_conv_bf16 '*MatchesTheCpu*'
    sanitize "$tool" test_cuda_attention_bf16
    sanitize "$tool" test_diffusion_loss 'CudaDiffusionLoss.MatchesTheCpuReference'
  done
}

# kernel-bench, then cuDNN's fused attention (SDPA) and PyTorch's other attention kernels at
# its attention shapes (scripts/attention_reference.py: PyTorch reaches cuDNN's SDPA through
# cudnn-frontend, which the engine's machines do not have), when torch is importable.
# kernel-bench without the naive convolution (v1: minutes at these shapes, and no contender),
# the sections in DDPM_BENCH_SECTIONS (default all), under a time limit: it writes its JSON
# after each section, so a run stopped there keeps the sections it finished (exit 124).
run_bench() {
  # Two processes: every row but those on Hopper's wgmma and TMA kernels first, then those
  # (--only-sm90): a kernel's trap on the GPU ends its process's CUDA context and every row
  # after it there, and the newest kernels are the likeliest to trap. kernel-bench.json has
  # the rows of both.
  # shellcheck disable=SC2086 # the sections are words
  within "${DDPM_BENCH_TIMEOUT:-480}" "$build/apps/kernel-bench" ${DDPM_BENCH_SECTIONS:-all} \
    --skip-naive --without-sm90 --json "$out/kernel-bench-main.json" > "$out/kernel-bench.txt" 2>&1
  echo "kernel-bench --without-sm90 exit $?" | tee "$out/bench.status"
  # shellcheck disable=SC2086
  within "${DDPM_BENCH_SM90_TIMEOUT:-240}" "$build/apps/kernel-bench" ${DDPM_BENCH_SECTIONS:-all} \
    --skip-naive --only-sm90 --json "$out/kernel-bench-sm90.json" >> "$out/kernel-bench.txt" 2>&1
  echo "kernel-bench --only-sm90 exit $?" | tee -a "$out/bench.status"
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
names = ("kernel-bench-main.json", "kernel-bench-sm90.json")
parts = {n: json.load(open(os.path.join(out, n))) for n in names if os.path.exists(os.path.join(out, n))}
if parts:
    merged = dict(next(iter(parts.values())))
    merged["rows"] = [r for p in parts.values() for r in p["rows"]]
    merged["complete"] = len(parts) == len(names) and all(p.get("complete") for p in parts.values())
    failed = {f"{n}: {s}": why for n, p in parts.items() for s, why in p.get("failed_sections", {}).items()}
    merged.pop("failed_sections", None)
    if failed:
        merged["failed_sections"] = failed
    json.dump(merged, open(os.path.join(out, "kernel-bench.json"), "w"), indent=2)
PY
  if torch_on_gpu; then
    within 300 python3 scripts/attention_reference.py --json "$out/attention-pytorch.json" \
      > "$out/attention-pytorch.txt" 2>&1
    echo "attention_reference exit $?" | tee -a "$out/bench.status"
  else
    echo "attention_reference: torch with CUDA not importable, skipped" | tee -a "$out/bench.status"
  fi
}

# ncu_bottlenecks CAP RANGE KERNELS NAME SECTION...: Nsight Compute on the kernels matching
# KERNELS inside the NVTX range RANGE of `kernel-bench SECTION... --once`, with the sections
# that say what bounds a kernel: speed of light (SM and memory throughput), occupancy,
# compute (the tensor pipes' use) and warp state (what the warps stall on); into
# OUT_DIR/ncu-NAME.csv. ncu_bin: run_profile's, its caller.
ncu_bottlenecks() {
  local cap=$1 range=$2 kernels=$3 name=$4
  shift 4
  within "$cap" "$ncu_bin" --nvtx --nvtx-include "$range/" -k "regex:$kernels" \
    --section SpeedOfLight --section Occupancy --section ComputeWorkloadAnalysis \
    --section WarpStateStats --page details --csv "$build/apps/kernel-bench" "$@" --once \
    > "$out/ncu-$name.csv" 2> "$out/ncu-$name.log"
  echo "ncu $name exit $?" | tee -a "$out/profile.status"
}

run_profile() {
  local ncu_bin
  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2> /dev/null)
  if [ -z "$ncu_bin" ]; then
    echo "profile: ncu not installed, skipped" | tee "$out/profile.status"
    return
  fi
  # Each loss kernel's launches in its NVTX range, at both shapes (--once: two calls a row,
  # ~120 launches in all, where 20 timed runs a row spent the launch count on the CIFAR
  # shape), hardware DRAM bytes and duration, and how busy the issue slots and DRAM were
  # (which of the two bounds the fused kernels: docs/fused-loss.md, "What limits it").
  local loss_metrics=dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum
  loss_metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active
  loss_metrics+=,dram__throughput.avg.pct_of_peak_sustained_elapsed
  within 300 "$ncu_bin" --nvtx --nvtx-include "loss fused/" --nvtx-include "corrupt fused (f32 x0)/" \
    --nvtx-include "corrupt fused (u8 x0, flip)/" --nvtx-include "loss unfused/" \
    --nvtx-include "loss fused, one quad a thread/" \
    --nvtx-include "loss fused, two quads a thread/" \
    --launch-count 200 --metrics "$loss_metrics" \
    --csv "$build/apps/kernel-bench" loss --once > "$out/ncu-loss.csv" 2> "$out/ncu-loss.log"
  echo "ncu exit $?" | tee "$out/profile.status"
  # Shared-memory wavefronts and bank conflicts (ncu's shared-memory table: shared loads and
  # stores, LDSM, LDGSTS) of conv v4 and the bf16 flash kernels, on their tests' small
  # shapes: the hardware's count of what tests/cuda_emulation/test_bank_conflicts.cpp
  # counts on the emulated device (ldmatrix and cp.async conflict-free; docs/kernels.md).
  within 240 env DDPM_TEST_SMALL_SHAPES=1 "$ncu_bin" -k "regex:conv_gemm_bf16" \
    --launch-count 40 --section MemoryWorkloadAnalysis_Tables --page details --csv \
    "$build/tests/test_cuda_conv_bf16" --gtest_filter="*SameBf16Operands*" \
    > "$out/ncu-banks-conv.csv" 2> "$out/ncu-banks-conv.log"
  echo "ncu banks conv exit $?" | tee -a "$out/profile.status"
  within 240 env DDPM_TEST_SMALL_SHAPES=1 "$ncu_bin" -k "regex:flash_" --launch-count 40 \
    --section MemoryWorkloadAnalysis_Tables --page details --csv \
    "$build/tests/test_cuda_attention_bf16" > "$out/ncu-banks-flash.csv" \
    2> "$out/ncu-banks-flash.log"
  echo "ncu banks flash exit $?" | tee -a "$out/profile.status"
  # Why conv v4 and v5 run at 0.3-0.6x cuDNN and the flash backward at 0.50x cuDNN's SDPA
  # (docs/gpu-report.md): each of their launches on the CIFAR-10 model's 32x32 128->128
  # layer and at its attention head (L 256, d 256), batch 128 (kernel-bench --once: one
  # launch per row; an NVTX range "conv <layer>" / "attention <shape>" selects the shape).
  # About 20 conv launches and 6 flash ones, a few seconds of replays each.
  ncu_bottlenecks 300 "conv res 32x32 32x32 128->128" "conv_gemm_(bf16|wgmma)" conv-32x32 \
    conv --skip-naive
  # Where the same launches find their bytes (docs/kernels.md, v4 steps 12 and 13): L1's hit
  # rate on the forward's and dgrad's gathers (cp.async.ca by default; .cg in the "gathers
  # in L2 only" rows), the L2 traffic, and (launch statistics) the shared-memory split the
  # driver took for each kernel's carveout. The emulator's count: 83% of the gathers'
  # sectors hit with 78 KB of L1 a block (128x128 tiles), 86% with 156 KB (256x128).
  within 240 "$ncu_bin" --nvtx --nvtx-include "conv res 32x32 32x32 128->128/" \
    -k "regex:conv_gemm_(bf16|wgmma)" --section MemoryWorkloadAnalysis \
    --section MemoryWorkloadAnalysis_Tables --section LaunchStats --page details --csv \
    "$build/apps/kernel-bench" conv --skip-naive --once > "$out/ncu-conv-l1.csv" \
    2> "$out/ncu-conv-l1.log"
  echo "ncu conv-l1 exit $?" | tee -a "$out/profile.status"
  ncu_bottlenecks 240 "attention 16x16, 1 head B128 L256 d256" "flash_" flash-d256 attention
  # The direct kernels of the last layer (128 -> 3: conv2d_thin.cu), whose design predicts
  # them memory- and FMA-bound at ~0.03 ms a pass: whether they are, or stall on the loads.
  ncu_bottlenecks 180 "conv conv_out 32x32 128->3" "thin_" conv-out conv --skip-naive
  # Group norm's mappings on the 32x32x128 map (each row's kernels once): whether v4 (the slab
  # in registers, group_norm_resident.cu) moves its bytes at the memory's pace, and what v3's
  # extra passes and serial sums cost beside it.
  ncu_bottlenecks 180 "memory 32x32x128" "group_norm" gn-32x32 memory
}

# The CIFAR-10 model's training step at batch 128 on the engine and, beside each engine run,
# the same step in PyTorch (scripts/pytorch_reference.py, when torch is importable): the
# comparison the project is measured by. In order of what a call short of time most needs:
# - bf16 (precision=bf16: the v4 convolution, block shapes autotuned, bf16 activations by
#   default), then PyTorch's bf16 autocast (channels_last);
# - bf16 on cuDNN's convolutions (cuda_conv=cudnn: the step-level ratio of ours to the
#   library's), then torch.compile (the issue's bar, its compilation inside a longer warm-up);
# - bf16 on the faster of the two per layer (cuda_conv=auto: its log prints each choice);
# - the bf16 step as one CUDA graph per step (cuda_graph=true; no op profile: a replay
#   launches no op): its ms/step beside the eager run's is the graph's gain; on an sm_90 GPU
#   once more on convolution v5 (cuda_conv=wgmma, its schedules autotuned per layer), the
#   one run whose autotuner also times the kernels no GPU has run yet
#   (cuda_autotune_unverified: the flash pair on wgmma), so that a trap of theirs ends that
#   run alone;
# - bf16 products on fp32 activations (activations=fp32: autocast's model, twice the bytes of
#   every stored activation);
# - tf32 (the v3 TF32 tensor-core convolution) and PyTorch TF32; fp32 and PyTorch fp32.
# Each engine log line also gives the step's launches, graph launches, host syncs and late
# reads (step_work); profile_steps=5 adds the per-op GPU time of steps 3-7 (CUDA events,
# engine/op_profile.h) to the log and run folder. DDPM_TRAIN_STEPS: steps per run (30).
train_engine() {  # train_engine NAME --set key=value...
  local name=$1
  shift
  within 300 "$build/apps/ddpm" train --config configs/cifar10_ddpm.json --set device=cuda \
    --set steps="${DDPM_TRAIN_STEPS:-30}" --set log_every=10 --set sample_every=0 \
    --set ckpt_every=0 --set n_samples=8 --set sample_steps=10 --set sampler=ddim \
    --set cuda_autotune=true --set out_dir="$out/train-run-$name" "$@" \
    > "$out/train-$name.log" 2>&1 || train_status=$?
}
train_pytorch() {  # train_pytorch NAME [pytorch_reference.py flags...]
  local name=$1
  shift
  $have_torch || return 0
  within 300 python3 scripts/pytorch_reference.py "$@" --json "$out/pytorch-$name.json" \
    >> "$out/pytorch.log" 2>&1 || train_status=$?
}
run_train() {
  train_status=0
  have_torch=false
  # DDPM_PYTORCH=0: the engine's runs only (PyTorch's timed in an earlier call)
  [ "${DDPM_PYTORCH:-1}" != 0 ] && torch_on_gpu && have_torch=true
  : > "$out/pytorch.log"
  train_engine tiled-bf16 --set cuda_conv=tiled --set precision=bf16 --set profile_steps=5
  train_pytorch bf16 --bf16
  train_engine cudnn-bf16 --set cuda_conv=cudnn --set precision=bf16 --set profile_steps=5
  train_pytorch bf16-compiled --bf16 --compile --warmup 10
  train_engine auto-bf16 --set cuda_conv=auto --set precision=bf16 --set profile_steps=5
  train_engine graph-bf16 --set cuda_conv=tiled --set precision=bf16 --set cuda_graph=true
  [ "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)" = 9.0 ] &&
    train_engine graph-wgmma-bf16 --set cuda_conv=wgmma --set precision=bf16 \
      --set cuda_graph=true --set cuda_autotune_unverified=true
  train_engine bf16-fp32-activations --set cuda_conv=tiled --set precision=bf16 \
    --set activations=fp32 --set profile_steps=5
  train_engine tiled-tf32 --set cuda_conv=tiled --set precision=tf32 --set profile_steps=5
  train_pytorch tf32 --tf32
  train_engine tiled-fp32 --set cuda_conv=tiled --set precision=fp32 --set profile_steps=5
  train_pytorch fp32
  cat "$out"/train-*.log > "$out/train.log"
  echo "train exit $train_status" | tee "$out/train.status"
  $have_torch ||
    echo "pytorch: not run (DDPM_PYTORCH=0, or torch with CUDA not importable)" |
    tee -a "$out/train.status"
}

# Sampling 256 images from the fp32 training run's checkpoint (else the bf16 run's), in the
# order a call short of time most needs: bf16 (bf16 activations: the run's config names none,
# so they follow --precision) for 100 DDPM steps (the issue's goal is 1000: ms per step x
# 1000), then PyTorch's same-model loop in bf16 autocast (DDIM, the same number of model
# calls: the comparison); the bf16 loop as one CUDA graph per step, and where its time goes;
# then fp32 for 20 steps (326 ms a step on the H200: 100 would cost half a minute) and
# PyTorch's fp32 loop of as many.
sample_engine() {  # sample_engine NAME ddpm-sample-flags...
  local name=$1
  shift
  within 300 "$build/apps/ddpm" sample --ckpt "$ckpt" --out "$out/samples-$name.png" --n 256 \
    --sampler ddpm --device cuda "$@" >> "$out/sample.log" 2>&1 || status=$?
}
sample_pytorch() {  # sample_pytorch STEPS [pytorch_reference.py flags...]
  local steps=$1
  shift
  $have_torch || return 0
  within 300 python3 scripts/pytorch_reference.py --batch 256 --sample-steps "$steps" --steps 2 \
    --warmup 1 "$@" >> "$out/sample.log" 2>&1 || pytorch_status=$?
}
run_sample() {
  local ckpt="" run status=0 pytorch_status=0 have_torch=false
  for run in tiled-fp32 tiled-bf16; do  # the last checkpoint of the first of these runs
    [ -n "$ckpt" ] || ckpt=$(ls "$out/train-run-$run"/ckpt/*.safetensors 2> /dev/null | tail -1)
  done
  if [ -z "$ckpt" ]; then
    echo "sample: no checkpoint from the train stage, skipped" | tee "$out/sample.status"
    return
  fi
  torch_on_gpu && have_torch=true
  sample_engine bf16 --steps 100 --precision bf16
  sample_pytorch 100 --bf16
  # the same loop as one CUDA graph per denoising step (--graph): same samples, less host
  sample_engine bf16-graph --steps 100 --precision bf16 --graph
  # and on the faster of ours and cuDNN's convolutions per layer (--cuda-conv auto: the
  # forward passes are where v4 was 0.5-0.85x cuDNN), as a graph
  sample_engine bf16-auto-graph --steps 100 --precision bf16 --cuda-conv auto --graph
  # where a denoising step's time goes (a separate, shorter run: the events cost a little)
  sample_engine bf16-profiled --steps 20 --precision bf16 --profile
  sample_engine fp32 --steps 20 --precision fp32
  sample_pytorch 20
  echo "sample exit $status" | tee "$out/sample.status"
  if $have_torch; then
    echo "pytorch sampling exit $pytorch_status" | tee -a "$out/sample.status"
  fi
}

run_report() {
  python3 - "$out" <<'PY'
import json, os, sys, datetime
out = sys.argv[1]
def read(name):
    p = os.path.join(out, name)
    return open(p).read() if os.path.exists(p) else "(not run)"
report = {"date": datetime.date.today().isoformat(),
          "device": os.popen("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2> /dev/null").read().strip()
                    or "(nvidia-smi did not answer: the report was written off the GPU machine)",
          "build": read("build.status").strip(), "ctest": read("ctest.status").strip(),
          "ctest_cpu": read("ctest-cpu.status").strip(),
          "sanitizer": read("sanitizer.status").strip().splitlines(),
          "bench": read("bench.status").strip(), "profile": read("profile.status").strip(),
          "train": read("train.status").strip(), "sample": read("sample.status").strip(),
          "skipped": read("skipped.status").strip()}
if os.path.exists(os.path.join(out, "kernel-bench.json")):
    report["kernel_bench"] = json.load(open(os.path.join(out, "kernel-bench.json")))
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)
ctest_tail = "\n".join(l for l in read("ctest.log").splitlines() if "tests passed" in l or "Failed" in l or "***" in l)
with open(os.path.join(out, "report.md"), "w") as f:
    f.write(f"# GPU check, {report['date']}\n\ndevice: {report['device']}\n\n")
    f.write(f"- build: {report['build']}\n- ctest: {report['ctest']}\n- ctest, CPU tests: {report['ctest_cpu']}\n- bench: {report['bench']}\n- train: {report['train']}\n")
    if report["skipped"] != "(not run)":
        f.write("- out of time: " + "; ".join(report["skipped"].splitlines()) + "\n")
    f.write("\n## Tests\n```\n" + ctest_tail + "\n```\n")
    f.write("\n### What the GPU tests measured (scripts/test_measurements.py)\n```\n"
            + read("ctest-measured.txt")[:40000] + "\n```\n")
    f.write("\n## compute-sanitizer\n```\n" + "\n".join(report["sanitizer"]) + "\n```\n")
    f.write("\n## Kernel benchmark\n```\n" + read("kernel-bench.txt") + "\n```\n")
    if os.path.exists(os.path.join(out, "kernel-bench.json")):
        f.write("\n### Each kernel against its previous version and its library (scripts/bench_ratios.py)\n\n"
                + os.popen("python3 scripts/bench_ratios.py " + os.path.join(out, "kernel-bench.json")).read() + "\n")
        f.write("\n### The times predicted without a GPU, against this run (scripts/predictions.py)\n\n"
                + os.popen("python3 scripts/predictions.py " + os.path.join(out, "kernel-bench.json")).read() + "\n")
    f.write("\n## Attention: cuDNN SDPA and PyTorch's kernels (scripts/attention_reference.py)\n```\n"
            + read("attention-pytorch.txt") + "\n```\n")
    if all(os.path.exists(os.path.join(out, n)) for n in ("kernel-bench.json", "attention-pytorch.json")):
        f.write("\n### The engine's flash attention against cuDNN SDPA\n\n" + os.popen(
            "python3 scripts/attention_reference.py --compare " + os.path.join(out, "kernel-bench.json")
            + " " + os.path.join(out, "attention-pytorch.json")).read() + "\n")
    f.write("\n## Nsight Compute on the loss kernels (DRAM bytes, duration)\n```\n" + read("ncu-loss.csv")[:20000] + "\n```\n")
    for name in ("conv", "flash"):
        f.write("\n## Nsight Compute: shared-memory wavefronts and bank conflicts, " + name
                + " (the emulator counts none for ldmatrix and cp.async)\n```\n"
                + read("ncu-banks-" + name + ".csv")[:20000] + "\n```\n")
    f.write("\n## Training benchmark (CIFAR-10 model, batch 128, 30 steps; fp32, tf32, bf16)\n```\n" + read("train.log") + "\n```\n")
    f.write("\n## PyTorch, same model and step (scripts/pytorch_reference.py; fp32, TF32, bf16 autocast)\n```\n" + read("pytorch.log") + "\n```\n")
    # every candidate an autotuner left out, in any training run: its output was not the
    # reference's on this GPU (kernels/cuda/autotune_check.cuh), so the kernel is wrong here
    logs = sorted(n for n in os.listdir(out) if n.startswith("train-") and n.endswith(".log"))
    # (and cuDNN's algorithms timed under cuda_autotune: "cudnn benchmark: ..." lines)
    tuned = ("autotune:", "cudnn benchmark:")
    left_out = [n + ": " + l for n in logs for l in read(n).splitlines()
                if any(t in l for t in tuned) and (" left out (" in l or " kept untimed (" in l)]
    f.write("\n## Autotune candidates left out: output not the reference's on this GPU "
            "(%d training logs read)\n```\n" % len(logs) + ("\n".join(left_out) or "(none)")
            + "\n```\n")
    # what cuda_conv=auto and cuda_autotune chose, per layer and pass, with their times
    chosen = [l for l in read("train-auto-bf16.log").splitlines()
              if l.startswith(("conv autotune:", "attention autotune:", "cudnn benchmark:"))]
    f.write("\n## The autotuners' choices in the auto-bf16 run (v4 or cuDNN per convolution pass; "
            "the attention's path; cuDNN's algorithms)\n```\n" + ("\n".join(chosen) or
                                                                   "(none: not run)") + "\n```\n")
    # cuDNN's algorithms timed in the cudnn-bf16 run (cuda_autotune): the heuristics' pick
    # first, then each other deterministic one, per shape and pass
    timed = [l for l in read("train-cudnn-bf16.log").splitlines()
             if l.startswith("cudnn benchmark:")]
    f.write("\n## cuDNN's algorithms timed in the cudnn-bf16 run (the heuristics' pick first)\n"
            "```\n" + ("\n".join(timed) or "(none: not run)") + "\n```\n")
    # and the block shapes' (v4's five, with the gathers through L1 and the carveout:
    # docs/kernels.md v4 steps 12-13) and v5's schedules, per pass and GEMM size
    shapes = [l for name in ("train-tiled-bf16.log", "train-graph-wgmma-bf16.log")
              for l in read(name).splitlines()
              if l.startswith(("conv v4 autotune:", "conv v5 autotune:"))]
    f.write("\n## The block shapes the convolutions' autotuners kept (tiled-bf16: v4; "
            "graph-wgmma-bf16: v5)\n```\n" + ("\n".join(shapes) or "(none: not run)") + "\n```\n")
    # the linear layers whose bias cuBLASLt could not add in its epilogue (kernels/cuda/
    # gemm_lt.cuh): they ran the product, then a pass, as before; once per problem and log
    refused = sorted({n + ": " + l for n in logs + ["kernel-bench.txt", "sample.log"]
                      for l in read(n).splitlines() if l.startswith("linear: cuBLASLt has no")})
    f.write("\n## Linear layers without cuBLASLt's bias epilogue (the product, then a pass)\n"
            "```\n" + ("\n".join(refused) or "(none)") + "\n```\n")
    f.write("\n## Sampling, 256 images x 100 steps (engine fp32, bf16; PyTorch fp32, bf16)\n```\n" + read("sample.log") + "\n```\n")
print(open(os.path.join(out, "report.md")).read()[:3000])
PY
}

for s in "${stages[@]}"; do
  if [ "$s" != report ] && [ "$(seconds_left)" -le 0 ]; then
    echo "gpu-check: stage $s skipped: no time left of DDPM_GPU_SECONDS=${DDPM_GPU_SECONDS:-}" |
      tee -a "$out/skipped.status"
    continue
  fi
  case "$s" in
    build) run_build ;;
    test) run_tests ;;
    test-cpu) run_tests_cpu ;;
    sanitize) run_sanitize ;;
    bench) run_bench ;;
    profile) run_profile ;;
    train) run_train ;;
    sample) run_sample ;;
    report) run_report ;;
    *) echo "gpu-check: unknown stage '$s'"; exit 2 ;;
  esac
done
