#!/usr/bin/env bash
# scripts/launch_coverage.py on a made-up repository: a kernel file with a launch on one
# line, one written over three lines, one in a comment, a macro wrapping DDPM_LAUNCH used
# twice (each use a launch: __LINE__ is the use's line), and the macro's definition; records
# that name the one-line launch by its absolute path, the long one by its last line and one
# of the macro's uses. The report counts 3 of 4 and names the other use; with it recorded,
# 4 of 4 and a pass; with the long launch's record gone it names that launch and fails; with
# nothing recorded it fails saying so; --clear empties the folder.
#   tests/cli/launch_coverage.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/repo/kernels/cuda" "$work/sites"
fail() { echo "FAIL: $*"; exit 1; }
cat > "$work/repo/kernels/cuda/k.cu" <<'CU'
#define DDPM_LAUNCH(kernel, ...) launch(kernel, __VA_ARGS__)
#define LAUNCH(kernel, n) \
  if ((n) > 0) DDPM_LAUNCH(kernel, n, 32)()
void run() {
  DDPM_LAUNCH(first_kernel, 1, 32)(x);
  // DDPM_LAUNCH(commented_out, 1, 1)(x);
  DDPM_LAUNCH((second_kernel<A, B>),
              grid,
              kThreads)(x, y);
  LAUNCH(add_kernel, n);
  LAUNCH(mul_kernel, n);
}
CU
cover() { python3 "$src/scripts/launch_coverage.py" --root "$work/repo" "$work/sites" 2>&1; }
printf '%s\n' "$work/repo/kernels/cuda/k.cu:5 first_kernel" > "$work/sites/1.txt"
printf '%s\n' "kernels/cuda/k.cu:9 (second_kernel<A, B>)" "kernels/cuda/k.cu:10 add_kernel" \
  > "$work/sites/2.txt"
out=$(cover) && fail "the macro's second use is not recorded, yet it passed: $out"
grep -qF "3 of 4 kernel launches" <<< "$out" || fail "not 3 of 4: $out"
grep -qF "kernels/cuda/k.cu:11 mul_kernel" <<< "$out" ||
  fail "the macro's use no test ran is not named: $out"
echo "kernels/cuda/k.cu:11 mul_kernel" > "$work/sites/3.txt"
out=$(cover) || fail "every launch recorded, yet it failed: $out"
grep -qF "4 of 4 kernel launches" <<< "$out" || fail "not 4 of 4: $out"
rm "$work/sites/2.txt"
out=$(cover) && fail "the long launch is not recorded, yet it passed: $out"
grep -qF "kernels/cuda/k.cu:7 (second_kernel<A, B>)" <<< "$out" ||
  fail "the launch no test ran is not named by its first line and kernel: $out"
grep -qF "commented_out" <<< "$out" && fail "a launch in a comment counted: $out"
rm "$work/sites/"*.txt
out=$(cover) && fail "nothing recorded, yet it passed: $out"
grep -qF "nothing recorded" <<< "$out" || fail "an empty folder is not named as such: $out"
touch "$work/sites/old.txt"
python3 "$src/scripts/launch_coverage.py" --clear "$work/sites" || fail "--clear failed"
[ -d "$work/sites" ] && [ -z "$(ls -A "$work/sites")" ] || fail "--clear left the folder unempty"
echo "PASS: launch_coverage.py counts launches (macro uses each), names those not run, and fails"
