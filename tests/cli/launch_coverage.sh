#!/usr/bin/env bash
# scripts/launch_coverage.py on a made-up repository. Its kernel file has a launch on one
# line, one written over three lines, one in a comment, a macro wrapping DDPM_LAUNCH used
# twice (each use a launch: __LINE__ is the use's line) and the macro's definition; its
# kernels are first_kernel and the template tk (launch bounds with parentheses inside),
# built here into an executable (first_kernel, tk<1>, tk<2>) whose addresses the records
# give, as the emulation's do. Checked: 3 of 4 launches and the
# macro's other use named; 2 of 3 instantiations and tk<2> named; all recorded passes; the
# long launch's record gone names it by its first line; nothing recorded fails saying so;
# --clear empties the folder.
#   tests/cli/launch_coverage.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/repo/kernels/cuda" "$work/sites"
fail() { echo "FAIL: $*"; exit 1; }
cat > "$work/repo/kernels/cuda/k.cu" <<'CU'
#define DDPM_LAUNCH(kernel, ...) launch(kernel, __VA_ARGS__)
#define LAUNCH(kernel, n) \
  if ((n) > 0) DDPM_LAUNCH(kernel, n, 32)()
__global__ void first_kernel(int) {}
template <int N>
__global__ void __launch_bounds__(256, (N > 1 ? 2 : 1)) tk(int) {}
void run() {
  DDPM_LAUNCH(first_kernel, 1, 32)(x);
  // DDPM_LAUNCH(commented_out, 1, 1)(x);
  DDPM_LAUNCH((tk<1>),
              grid,
              kThreads)(x);
  LAUNCH(tk<2>, n);
  LAUNCH(first_kernel, n);
}
CU
cat > "$work/kern.cpp" <<'CPP'
namespace ddpm::cuda {
void first_kernel(int) {}
template <int N> void tk(int) {}
template void tk<1>(int);
template void tk<2>(int);
}  // namespace ddpm::cuda
int main() {}
CPP
"${CXX:-c++}" -o "$work/kern" "$work/kern.cpp" || fail "cannot build the made-up kernels"
at() { nm -C --defined-only "$work/kern" | awk -v k="$1" '$0 ~ k {print $1; exit}'; }
first=$(at "first_kernel") tk1=$(at "tk<1>")
[ -n "$first" ] && [ -n "$tk1" ] || fail "nm does not list the made-up kernels"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$work/kern" "$2" "$3" >> "$work/sites/$4.txt"; }
record "$work/repo/kernels/cuda/k.cu:8" "$first" first_kernel 1
record "kernels/cuda/k.cu:12" "$tk1" "(tk<1>)" 2
record "kernels/cuda/k.cu:14" "$first" first_kernel 2
cover() { python3 "$src/scripts/launch_coverage.py" --root "$work/repo" "$work/sites" 2>&1; }
out=$(cover) && fail "the macro's use of tk<2> is not recorded, yet it passed: $out"
grep -qF "3 of 4 kernel launches" <<< "$out" || fail "not 3 of 4 launches: $out"
grep -qF "kernels/cuda/k.cu:13 tk<2>" <<< "$out" ||
  fail "the macro's use not run is not named: $out"
grep -qF "kernel instantiations: 2 of 3" <<< "$out" || fail "not 2 of 3 instantiations: $out"
grep -qxF "  tk<2>" <<< "$out" || fail "the instantiation not run is not named: $out"
grep -qF "commented_out" <<< "$out" && fail "a launch in a comment counted: $out"
record "kernels/cuda/k.cu:13" "$(at "tk<2>")" "tk<2>" 3
out=$(cover) || fail "every launch and kernel recorded, yet it failed: $out"
grep -qF "4 of 4 kernel launches" <<< "$out" || fail "not 4 of 4: $out"
grep -qF "kernel instantiations: 3 of 3" <<< "$out" || fail "not 3 of 3: $out"
rm "$work/sites/2.txt"
out=$(cover) && fail "the long launch is not recorded, yet it passed: $out"
grep -qF "kernels/cuda/k.cu:10 (tk<1>)" <<< "$out" ||
  fail "the launch no test ran is not named by its first line and kernel: $out"
rm "$work/sites/"*.txt
out=$(cover) && fail "nothing recorded, yet it passed: $out"
grep -qF "nothing recorded" <<< "$out" || fail "an empty folder is not named as such: $out"
touch "$work/sites/old.txt"
python3 "$src/scripts/launch_coverage.py" --clear "$work/sites" || fail "--clear failed"
[ -d "$work/sites" ] && [ -z "$(ls -A "$work/sites")" ] || fail "--clear left the folder unempty"
echo "PASS: launch_coverage.py names the launches and the instantiations no test ran"
