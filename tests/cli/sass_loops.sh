#!/usr/bin/env bash
# scripts/sass_loops.py on a hand-written SASS listing (tests/cli/data/loops.sass): the loop
# it reports per kernel is the one with the most HMMA (the outer of two nested loops, which
# holds all three; NOPs not counted; the inner one is reported on a line of its own), FFMA
# where a kernel has no HMMA, and a kernel with neither is left out; the subroutines a loop
# calls are counted per call; --filter keeps the kernels whose name matches; --memory lists
# the loops with global loads and stores by access width. Needs no GPU and no CUDA tools (a
# .sass file is read as is).
#   tests/cli/sass_loops.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
out=$(python3 "$src/scripts/sass_loops.py" "$src/tests/cli/data/loops.sass" 2>&1) ||
  fail "sass_loops.py failed: $out"
grep -qF "loop: 8 instructions, 3 HMMA, 5 other; registers: -" <<< "$out" ||
  fail "the gemm's outer loop is not 8 instructions with 3 HMMA: $out"
grep -qF "HMMA 3, BRA 2, IADD3 1, LDSM 1, ISETP 1" <<< "$out" ||
  fail "the gemm's loop by opcode is wrong: $out"
grep -qF "inner loop: 4 instructions, counted once above but run once per trip (HMMA 2, LDSM 1, BRA 1)" \
  <<< "$out" || fail "the gemm's inner loop (0x40-0x80, no NOP) is not reported: $out"
[ "$(grep -c "inner loop" <<< "$out")" = 1 ] || fail "one inner loop in all: $out"
grep -qF "loop: 5 instructions, 1 FFMA, 4 other" <<< "$out" || fail "the axpy's FFMA loop: $out"
! grep -q "copy" <<< "$out" || fail "a kernel without HMMA or FFMA is listed: $out"
# div's loop calls a subroutine twice (3 instructions to its RET, the NOP left out) and
# leaves by a call to just past itself, which is not a subroutine
grep -qF "calls: 2 a trip, to subroutines of 3 instructions: 12 instructions a trip with them" \
  <<< "$out" || fail "div's calls: $out"
[ "$(grep -c "calls:" <<< "$out")" = 1 ] || fail "only div's loop calls subroutines: $out"
only=$(python3 "$src/scripts/sass_loops.py" --filter axpy "$src/tests/cli/data/loops.sass" 2>&1)
grep -q "axpy" <<< "$only" && ! grep -q "gemm" <<< "$only" || fail "--filter axpy: $only"
# --memory: every loop with global accesses, by width (LDG.E.128 16 bytes, LDG.E 4, .U16 2),
# NOPs left out: wide's loop is 5 instructions moving 34 bytes a thread; the gemm's loops
# have no global access and are not listed
mem=$(python3 "$src/scripts/sass_loops.py" --memory "$src/tests/cli/data/loops.sass" 2>&1) ||
  fail "sass_loops.py --memory failed: $mem"
grep -qF "loop at 0x0010: 5 instructions, 2 LDG x 16 B, 1 STG x 2 B: 34 B a thread, 2.4 instructions per 16 B" \
  <<< "$mem" || fail "wide's loop by access width: $mem"
grep -qF "loop at 0x0000: 3 instructions, 1 LDG x 4 B, 1 STG x 4 B: 8 B a thread, 6.0 instructions per 16 B" \
  <<< "$mem" || fail "copy's loop: $mem"
! grep -q "gemm" <<< "$mem" || fail "a kernel without global accesses in a loop is listed: $mem"
echo "PASS: sass_loops"
