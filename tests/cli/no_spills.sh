#!/usr/bin/env bash
# The tuned kernels (conv v4 and v5, the direct few-output convolutions, the bf16 flash pair
# and the flash pair on wgmma, group norm's four mappings, the wgmma GEMM) compiled for
# sm_90, the GPUs they are tuned for (sm_90a for the files with wgmma kernels, as CMake
# builds them): ptxas must report no spill stores or loads in any of them. docs/kernels.md gives their registers as
# spill-free; a change that pushes one past its register budget (the launch bounds' minimum
# blocks, or 255) fails here, on a machine without a GPU, not as local-memory traffic in a
# GPU session's timings (scripts/sass_loops.py shows the loop).
# Needs nvcc only (no GPU, no cuobjdump).
#   tests/cli/no_spills.sh SOURCE_DIR NVCC WORKDIR
set -u
src=$1 nvcc=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
total=0
# The files with wgmma kernels as CMake builds them for Hopper: sm_90a (CMakeLists.txt)
for f in conv2d_bf16 conv2d_bf16_v5 conv2d_thin attention_flash_bf16 attention_flash_bf16_backward \
    attention_flash_wgmma attention_flash_wgmma_backward group_norm group_norm_resident gemm_sm90; do
  target=-arch=sm_90
  [[ $f == conv2d_bf16_v5 || $f == gemm_sm90 || $f == attention_flash_wgmma* ]] &&
    target=-gencode=arch=compute_90a,code=sm_90a
  "$nvcc" -std=c++17 -O3 "$target" -I "$src" -cubin -Xptxas -v -o "$work/$f.cubin" \
    "$src/kernels/cuda/$f.cu" > "$work/$f.log" 2>&1 ||
    fail "nvcc could not build $f.cu for sm_90: $(tail -5 "$work/$f.log")"
  n=$(PYTHONDONTWRITEBYTECODE=1 python3 - "$src/scripts" "$work/$f.log" <<'PY'
import subprocess, sys
sys.path.insert(0, sys.argv[1])
import sass_loops
kernels = sass_loops.ptxas_report(open(sys.argv[2]).read())
spilled = [(name, s, l) for name, (_, s, l) in kernels.items() if s or l]
for name, s, l in spilled:
    print(f"{sass_loops.demangle(name)}: {s} bytes of spill stores, {l} of loads", file=sys.stderr)
print(-1 if spilled or not kernels else len(kernels))
PY
  ) || fail "reading ptxas's report of $f.cu"
  [ "$n" -gt 0 ] || fail "$f.cu: kernels spill on sm_90 (above), or ptxas reported none"
  # ptxas serializing a kernel's wgmma (C7515: a non-wgmma instruction writes accumulators
  # while products are in flight; C7519: it injects a warpgroup.arrive before a wgmma to
  # use registers): each wgmma then waits for the one before, and the tensor cores idle.
  # (C7517, a warpgroup.wait on mbarrier_wait's trap path, costs nothing: ptx_sm90.cuh.)
  if grep -qE "C7515|C7519" "$work/$f.log"; then
    grep -E "C7515|C7519" "$work/$f.log" | sed 's/ in the function.*//; s/ in function.*//' |
      sort | uniq -c
    fail "$f.cu: ptxas serializes wgmma instructions (above)"
  fi
  total=$((total + n))
done
echo "PASS: no spills in $total sm_90 kernels, and no wgmma serialized"
