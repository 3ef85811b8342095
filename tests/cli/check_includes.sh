#!/usr/bin/env bash
# scripts/check_includes.py: every source file of the project includes the standard header
# of what it uses, itself or through a header of the project's (the GPU image's libstdc++
# broke the first GPU session's build on a <cstdint> that <string> had brought in here).
# Then on a made-up tree, that it can fail: a std::string with only <vector> and an
# int64_t with no header are named; a header's <cstdint> reaches the files that include it,
# and a name in a comment is no use.
#   tests/cli/check_includes.sh SOURCE_DIR WORKDIR
set -u
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/tree/engine"
fail() { echo "FAIL: $*"; exit 1; }
out=$(python3 "$src/scripts/check_includes.py" "$src" 2>&1) || fail "the project's sources: $out"
grep -qE " 0 missing includes$" <<< "$out" || fail "no verdict: $out"
t=$work/tree/engine
printf '#pragma once\n#include <cstdint>\ninline int64_t twice(int64_t v) { return 2 * v; }\n' \
  > "$t/fixed.h"
printf '#include "engine/fixed.h"\nint64_t four() { return twice(2); }\n' > "$t/through.cpp"
printf '#include <vector>\nstd::string name() { return "x"; }\n' > "$t/no_string.cpp"
printf 'int64_t n = 0;\n' > "$t/no_cstdint.cpp"
printf '// std::map<int, int> is what a comment says\nint k = 0;\n' > "$t/comment.cpp"
out=$(python3 "$src/scripts/check_includes.py" "$work/tree" 2>&1) && fail "it passed: $out"
grep -qF "engine/no_string.cpp: uses std::string without <string>" <<< "$out" ||
  fail "the std::string without <string> is not named: $out"
grep -qF "engine/no_cstdint.cpp: uses int64_t without <cstdint>" <<< "$out" ||
  fail "the int64_t without <cstdint> is not named: $out"
grep -qE "through.cpp|comment.cpp|fixed.h" <<< "$out" && fail "a file that is fine is named: $out"
grep -qF "5 files read, 2 missing includes" <<< "$out" || fail "the count: $out"
echo "PASS: check_includes"
