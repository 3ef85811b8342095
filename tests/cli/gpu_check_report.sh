#!/usr/bin/env bash
# scripts/gpu-check.sh's report stage on a folder of stage outputs as a GPU run leaves them
# (statuses, kernel-bench's JSON, PyTorch's attention timings, the training log, what the
# tests measured, taken out of ctest's log by scripts/test_measurements.py), with the
# sampling stage missing: report.md carries each stage's status, the sanitizer's lines, the
# engine-vs-cuDNN attention table and the logs, says "(not run)" for what did not run, and
# report.json holds kernel-bench's rows. Needs no GPU: a report can be written (or rewritten)
# from a GPU session's outputs on any machine. And a call out of time (DDPM_GPU_SECONDS)
# skips its stages, names them, and still writes its report; a bad time is refused; the
# bench stage runs the Hopper rows in a process of their own (a stand-in kernel-bench); the
# sanitize stage runs what it should (a stand-in compute-sanitizer), and so does the profile
# stage (a stand-in ncu).
#   tests/cli/gpu_check_report.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
echo "build exit 0" > "$work/build.status"
echo "ctest (GPU tests) exit 0" > "$work/ctest.status"
printf '100%% tests passed, 0 tests failed out of 86\n' > "$work/ctest.log"
# what the tests printed beside their verdicts, out of ctest's log (its format, made up)
cat > "$work/LastTest.log" <<'LOG'
Start testing: Dec 04 14:54 UTC
----------------------------------------------------------
12/86 Testing: CudaModel.CudnnBf16StepMatchesTheCpuPath
12/86 Test: CudaModel.CudnnBf16StepMatchesTheCpuPath
Command: "tests/test_cuda_model" "--gtest_filter=CudaModel.CudnnBf16StepMatchesTheCpuPath"
Output:
----------------------------------------------------------
Note: Google Test filter = CudaModel.CudnnBf16StepMatchesTheCpuPath
[ RUN      ] CudaModel.CudnnBf16StepMatchesTheCpuPath
GPU step vs CPU step (bf16, cuda_conv=cudnn): gradients 1.64e-02 (at mid.attn.qkv.w; bound 2e-02)
[       OK ] CudaModel.CudnnBf16StepMatchesTheCpuPath (4121 ms)
<end of output>
Test time =   4.20 sec
LOG
python3 "$src/scripts/test_measurements.py" "$work/LastTest.log" > "$work/ctest-measured.txt" ||
  fail "test_measurements.py failed"
measured="CudaModel.CudnnBf16StepMatchesTheCpuPath: GPU step vs CPU step (bf16, cuda_conv=cudnn): gradients 1.64e-02 (at mid.attn.qkv.w; bound 2e-02)"
[ "$(cat "$work/ctest-measured.txt")" = "$measured" ] ||
  fail "test_measurements.py gave: $(cat "$work/ctest-measured.txt")"
printf 'memcheck test_cuda_ops exit 0\nracecheck test_cuda_ops exit 1\n' > "$work/sanitizer.status"
echo "kernel-bench exit 0" > "$work/bench.status"
echo "train exit 0" > "$work/train.status"
echo "step 10 | loss 0.1 | 812.5 img/s" > "$work/train.log"
# the auto run's log: the autotuners' lines go to the report, the others not
autotuned="conv autotune: dgrad (128, 32, 32, 128) k3x3 -> 128 stride 1, bf16 activations and weight copy: v4 bf16 0.199 ms, cuDNN bf16 0.079 ms -> cuDNN bf16"
attention="attention autotune: batch 128, length 256, 256 channels, 1 heads (forward + backward, dqkv checked by its thirds): flash 0.300 ms -> flash"
# and cuDNN's algorithms, timed under cuda_autotune (kernels/cuda/conv2d_cudnn_plan.cuh)
benchmarked="cudnn benchmark: wgrad (128, 32, 32, 128) k3x3 -> 128 stride 1 pad 1,1,1,1 bf16: algo 1 0.074 ms, algo 6 0.069 ms -> algo 6"
printf 'training the U-Net\n%s\n%s\n%s\nstep 10/20  loss 1.0\n' "$autotuned" "$attention" \
  "$benchmarked" > "$work/train-auto-bf16.log"
# the v4 run's block-shape autotuner: its own section
shapes="conv v4 autotune: forward 131072 x 128 x 1152 (K in 1 slices): 128x128 0.150 ms, 256x128 64x64-warp 0.120 ms, -> 256x128 64x64-warp"
printf 'training the U-Net\n%s\nstep 10/20  loss 1.0\n' "$shapes" > "$work/train-tiled-bf16.log"
# a candidate an autotuner left out (kernels/cuda/autotune_check.cuh): named in a section of
# its own, with its log, whichever training run printed it
left_out="attention autotune: batch 128, length 256, 256 channels, 1 heads (forward + backward, dqkv checked by its thirds): flash 0.300 ms, flash on wgmma left out (error 0.5 of the largest value, bound 0.031) -> flash"
printf 'training the U-Net\n%s\n' "$left_out" > "$work/train-graph-wgmma-bf16.log"
cudnn_left_out="cudnn benchmark: dgrad (128, 16, 16, 256) k3x3 -> 256 stride 1 pad 1,1,1,1 bf16: algo 1 0.067 ms, algo 3 left out (error 1 of the largest value, bound 0.031) -> algo 1"
cudnn_kept="cudnn benchmark: forward (128, 16, 16, 256) k3x3 -> 256 stride 1 pad 1,1,1,1 bf16: algo 1 0.071 ms, algo 0 0.094 ms -> algo 1"
# a linear layer whose bias cuBLASLt could not add (kernels/cuda/gemm_lt.cuh): its own section
refused="linear: cuBLASLt has no algorithm adding the bias in its epilogue for M 32768 K 256 N 768 (bf16 operands, bf16 output, bias aligned to 128 bytes); the GEMM, then the bias pass"
printf 'training the U-Net\n%s\n%s\n%s\nstep 10/20  loss 1.0\n' "$cudnn_left_out" "$cudnn_kept" \
  "$refused" > "$work/train-cudnn-bf16.log"
echo "conv2d fwd  v4  1.000 ms" > "$work/kernel-bench.txt"
shape="16x16, 1 head B128 L256 d256"  # the rows of tests/cli/data/ (a GPU run's, made up)
cp "$src/tests/cli/data/kernel-bench-attention.json" "$work/kernel-bench.json"
cp "$src/tests/cli/data/attention-pytorch.json" "$work/attention-pytorch.json"
bash "$src/scripts/gpu-check.sh" "$work" report > "$work/stdout.txt" 2>&1 ||
  { cat "$work/stdout.txt"; fail "the report stage failed"; }
md="$work/report.md"
[ -f "$md" ] || fail "no report.md"
for line in "- build: build exit 0" "- ctest: ctest (GPU tests) exit 0" "- ctest, CPU tests: (not run)" \
    "- train: train exit 0" "100% tests passed, 0 tests failed out of 86" \
    "racecheck test_cuda_ops exit 1" "conv2d fwd  v4  1.000 ms" "812.5 img/s" "$measured" \
    "$autotuned" "$attention" "$benchmarked" \
    "| fwd | $shape | flash bf16 (mma.sync), bf16 tensors | 0.4000 | 0.3000 | 0.75x | 0.2500 |"; do
  grep -qF -- "$line" "$md" || fail "report.md lacks: $line"
done
for entry in "train-graph-wgmma-bf16.log: $left_out" "train-cudnn-bf16.log: $cudnn_left_out"; do
  grep -A3 "^## Autotune candidates left out" "$md" | grep -qF -- "$entry" ||
    fail "the autotuners' left-out candidates are not in their section: $entry"
done
for kept in "$autotuned" "$benchmarked"; do
  grep -A4 "^## Autotune candidates left out" "$md" | grep -qF -- "$kept" &&
    fail "the left-out section holds lines that left nothing out: $kept"
done
for line in "$cudnn_left_out" "$cudnn_kept"; do
  grep -A4 "^## cuDNN's algorithms timed in the cudnn-bf16 run" "$md" | grep -qF -- "$line" ||
    fail "the cudnn-bf16 run's benchmark lines are not in their section: $line"
done
grep -A4 "^## cuDNN's algorithms timed" "$md" | grep -qF "step 10/20" &&
  fail "the cuDNN section holds lines that are not the benchmark's"
grep -A4 "^## The autotuners' choices" "$md" | grep -qF "step 10/20" &&
  fail "the autotuners' section holds lines that are not theirs"
grep -A2 "^## Linear layers without cuBLASLt's bias epilogue" "$md" |
  grep -qxF -- "train-cudnn-bf16.log: $refused" || fail "the refused linear is not in its section"
grep -A3 "^## Linear layers without cuBLASLt's bias epilogue" "$md" | grep -qF "step 10/20" &&
  fail "the refused linears' section holds lines that are not theirs"
grep -A3 "^## The block shapes the convolutions' autotuners kept" "$md" | grep -qF -- "$shapes" ||
  fail "the block shapes' autotune lines are not in their section"
grep -A4 "^## The block shapes the convolutions' autotuners kept" "$md" | grep -qF "step 10/20" &&
  fail "the block shapes' section holds lines that are not theirs"
grep -A4 "^### Each kernel against its previous version" "$md" |
  grep -qF "| attention fwd | $shape | flash bf16 (mma.sync), bf16 tensors | 0.4000 |" ||
  fail "the table of ratios (scripts/bench_ratios.py) is not in the report"
grep -A40 "^### The times predicted without a GPU" "$md" | grep -qF "predictions held." ||
  fail "the predictions' table (scripts/predictions.py) is not in the report"
grep -A2 "^## Sampling" "$md" | grep -qF "(not run)" || fail "the missing sampling stage is not '(not run)'"
python3 -c "
import json, sys
r = json.load(open('$work/report.json'))
assert len(r['kernel_bench']['rows']) == 4, r.get('kernel_bench')
assert r['sample'] == '(not run)', r['sample']
" || fail "report.json does not hold kernel-bench's rows and the stages' statuses"
# A call given fewer seconds than the report keeps (DDPM_GPU_SECONDS) skips its stages, names
# them, and still writes the report.
late="$work/late"
DDPM_GPU_SECONDS=10 bash "$src/scripts/gpu-check.sh" "$late" build test report > "$late.txt" 2>&1 ||
  { cat "$late.txt"; fail "the call out of time failed"; }
for stage in build test; do
  grep -qF "stage $stage skipped: no time left" "$late/skipped.status" ||
    fail "stage $stage is not named as skipped"
done
[ ! -e "$late/build.status" ] || fail "the build ran with no time left"
grep -qF -- "- out of time: gpu-check: stage build skipped" "$late/report.md" ||
  fail "the report does not say which stages ran out of time"
# A time that is not a whole number of seconds is refused with its name and value.
for var in DDPM_GPU_SECONDS DDPM_BENCH_TIMEOUT DDPM_BENCH_SM90_TIMEOUT; do
  msg=$(env "$var=ten" bash "$src/scripts/gpu-check.sh" "$work/bad" report 2>&1) &&
    fail "$var=ten was accepted"
  grep -qF "$var must be a whole number of seconds, got 'ten'" <<< "$msg" ||
    fail "$var=ten: the error does not name it: $msg"
done
# The bench stage with a stand-in kernel-bench: every row but the Hopper kernels' in one
# process, then those in another (one that traps loses only its own rows), and
# kernel-bench.json holds the rows of both, incomplete, the failed section named with its
# process.
mkdir -p "$work/kb/apps"
cat > "$work/kb/apps/kernel-bench" <<'SH'
#!/usr/bin/env bash
json="" rows=""
while [ $# -gt 0 ]; do
  case $1 in
    --json) json=$2; shift ;;
    --without-sm90) rows='{"kernel": "conv2d fwd", "variant": "v4"}, {"kernel": "gemm", "variant": "cuBLAS"}' ;;
    --only-sm90) rows='{"kernel": "gemm", "variant": "wgmma"}' ;;
  esac
  shift
done
[ -n "$rows" ] || exit 3  # neither flag: not how the bench stage runs it
if [[ $rows == *wgmma* ]]; then
  echo "{\"rows\": [$rows], \"complete\": false, \"failed_sections\": {\"gemm\": \"trap\"}}" > "$json"
  exit 1
fi
echo "{\"rows\": [$rows], \"complete\": true}" > "$json"
SH
chmod +x "$work/kb/apps/kernel-bench"
DDPM_GPU_BUILD_DIR="$work/kb" bash "$src/scripts/gpu-check.sh" "$work/bench" bench > /dev/null 2>&1
grep -qx "kernel-bench --without-sm90 exit 0" "$work/bench/bench.status" &&
  grep -qx "kernel-bench --only-sm90 exit 1" "$work/bench/bench.status" ||
  fail "the bench stage's two processes are not both run and recorded: $(cat "$work/bench/bench.status")"
python3 -c "
import json
j = json.load(open('$work/bench/kernel-bench.json'))
assert [r['variant'] for r in j['rows']] == ['v4', 'cuBLAS', 'wgmma'], j['rows']
assert j['complete'] is False, j
assert j['failed_sections'] == {'kernel-bench-sm90.json: gemm': 'trap'}, j
" || fail "kernel-bench.json does not merge the two processes' rows"
mkdir -p "$work/bin"
# The test stage with a stand-in ctest, its output folder given as an absolute path (as a
# GPU session gives it): the log lands there, not under the build folder's parent.
printf '#!/usr/bin/env bash\necho "$PWD $*"; echo "100%% tests passed, 0 tests failed out of 2"\n' \
  > "$work/bin/ctest"
chmod +x "$work/bin/ctest"
PATH="$work/bin:$PATH" DDPM_GPU_BUILD_DIR="$work/kb" bash "$src/scripts/gpu-check.sh" \
  "$work/tests" test > /dev/null 2>&1
grep -qx "ctest (GPU tests) exit 0" "$work/tests/ctest.status" &&
  grep -qF "$work/kb -R Cuda|BenchSmoke|Nccl" "$work/tests/ctest.log" ||
  fail "the test stage does not run ctest in the build folder into OUT_DIR/ctest.log"
# The sanitize stage with a stand-in compute-sanitizer (the real one needs a GPU): every
# run at small shapes, memcheck on each CUDA suite, the shared-memory tools with their
# filters, each run's exit status recorded, new memory poisoned except under initcheck.
printf '#!/usr/bin/env bash\necho "small=$DDPM_TEST_SMALL_SHAPES poison=$DDPM_POISON_MEMORY $*"\n[[ "$*" != *test_philox* ]]\n' \
  > "$work/bin/compute-sanitizer"
chmod +x "$work/bin/compute-sanitizer"
PATH="$work/bin:$PATH" bash "$src/scripts/gpu-check.sh" "$work/san" sanitize > /dev/null 2>&1
status="$work/san/sanitizer.status"
[ "$(grep -c '^memcheck .* exit 0$' "$status")" = 11 ] || fail "memcheck did not pass 11 suites"
grep -qx "memcheck test_philox exit 1" "$status" || fail "a failing run's status is not recorded"
[ "$(grep -c '^\(racecheck\|synccheck\|initcheck\) ' "$status")" = 12 ] ||
  fail "not 4 runs of each shared-memory tool"
grep -qF "small=1 poison=1 --tool racecheck --error-exitcode 1 build-gpu/tests/test_cuda_conv_bf16 --gtest_filter=*MatchesTheCpu*" \
  "$work/san/sanitizer.log" || fail "racecheck on v4 is not run at small shapes with its filter"
! grep -q "^small= " "$work/san/sanitizer.log" || fail "a run not at small shapes"
[ "$(grep -c "poison=0 --tool initcheck " "$work/san/sanitizer.log")" = 4 ] &&
  ! grep -q "poison=0 --tool [^i]\|poison=1 --tool initcheck" "$work/san/sanitizer.log" ||
  fail "initcheck does not run on unpoisoned memory, or another tool does"
# The profile stage with a stand-in ncu: the loss kernels' DRAM bytes from kernel-bench, and
# the shared-memory table of conv v4 and the flash kernels from their tests at small shapes,
# each run's exit recorded and its CSV in the report.
printf '#!/usr/bin/env bash\necho "small=${DDPM_TEST_SMALL_SHAPES:-} $*"\n' > "$work/bin/ncu"
chmod +x "$work/bin/ncu"
PATH="$work/bin:$PATH" bash "$src/scripts/gpu-check.sh" "$work/prof" profile report > /dev/null 2>&1
for line in "ncu exit 0" "ncu banks conv exit 0" "ncu banks flash exit 0" "ncu conv-out exit 0" \
    "ncu gn-32x32 exit 0" "ncu conv-l1 exit 0"; do
  grep -qx "$line" "$work/prof/profile.status" || fail "profile.status lacks: $line"
done
want="small=1 -k regex:conv_gemm_bf16 --launch-count 40 --section MemoryWorkloadAnalysis_Tables"
grep -qF "$want" "$work/prof/ncu-banks-conv.csv" ||
  fail "ncu does not profile v4's shared memory at small shapes"
grep -qF -- '--nvtx-include conv conv_out 32x32 128->3/ -k regex:thin_' "$work/prof/ncu-conv-out.csv" ||
  fail "ncu does not profile the direct kernels on the last layer"
grep -qF -- '--nvtx-include memory 32x32x128/ -k regex:group_norm' \
  "$work/prof/ncu-gn-32x32.csv" ||
  fail "ncu does not profile group norm on the 32x32 map"
want="--nvtx-include conv res 32x32 32x32 128->128/ -k regex:conv_gemm_(bf16|wgmma)"
want+=" --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables"
want+=" --section LaunchStats"
grep -qF -- "$want" "$work/prof/ncu-conv-l1.csv" ||
  fail "ncu does not read L1's hit rate and the carveout on the 32x32 convolutions"
grep -qF "build-gpu/tests/test_cuda_attention_bf16" "$work/prof/ncu-banks-flash.csv" ||
  fail "ncu does not profile the flash kernels' test"
grep -A2 "^## Nsight Compute: shared-memory wavefronts and bank conflicts, flash" \
  "$work/prof/report.md" | grep -qF "regex:flash_" ||
  fail "the flash kernels' table is not in the report"
echo "PASS: gpu-check report"
