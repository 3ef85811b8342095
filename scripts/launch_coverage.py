#!/usr/bin/env python3
"""Launch coverage: does some emulated test run every kernel launch in kernels/cuda?

    scripts/launch_coverage.py --clear FOLDER   # empty the folder (before the tests)
    scripts/launch_coverage.py FOLDER           # the report; exit 1 on a launch not run

The CPU emulation of CUDA (tests/cuda_emulation) appends a line "file:line kernel" to
FOLDER/<pid>.txt the first time a process runs a grid from a DDPM_LAUNCH (runtime.h,
note_launch_site, when DDPM_LAUNCH_SITES names FOLDER; ctest sets it for every emulated
test). This script finds every DDPM_LAUNCH in kernels/cuda (a launch written over several
lines counts as run when any of its lines is recorded: compilers differ in which line
__LINE__ names there; a DDPM_LAUNCH inside a macro is a launch at each use of the macro,
where __LINE__ points) and names each one no test ran. A kernel no test launches is a kernel
no test checks against the CPU, however many tests its file has.
"""
import argparse
import collections
import glob
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def in_directive(text, line_start):
    """Whether the line starting at line_start belongs to a preprocessor directive (its own
    line, or one the lines before it continue with a backslash)."""
    while True:
        if text[line_start:].lstrip().startswith("#"):
            return True
        if line_start == 0 or not text[:line_start - 1].endswith("\\"):
            return False
        line_start = text.rfind("\n", 0, line_start - 1) + 1


def call_spans(text, name):
    """(first line, last line, first argument) of each call name(...) outside comments and
    preprocessor lines."""
    spans = []
    for m in re.finditer(r"\b" + name + r"\(", text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if "//" in text[line_start:m.start()] or in_directive(text, line_start):
            continue  # a comment, or a macro's definition
        depth, i, comma = 1, m.end(), None
        while depth:
            c = text[i]
            depth += c == "("
            depth -= c == ")"
            if c == "," and depth == 1 and comma is None:
                comma = i
            i += 1
        argument = " ".join(text[m.end():comma if comma else i - 1].split())
        spans.append((text.count("\n", 0, m.start()) + 1, text.count("\n", 0, i) + 1, argument))
    return spans


def wrappers(text):
    """Names of the macros of this file whose body holds a DDPM_LAUNCH: __LINE__ there is the
    line the macro is used on, so each use is a launch site of its own."""
    names = []
    for m in re.finditer(r"^#define (\w+)\(((?:.*\\\n)*.*)", text, re.M):
        if "DDPM_LAUNCH(" in m.group(2) and m.group(1) != "DDPM_LAUNCH":
            names.append(m.group(1))
    return names


def launches(root):
    """[(file, first line, last line, kernel text)] of every launch in kernels/cuda: each
    DDPM_LAUNCH, or each use of a macro that wraps one."""
    found = []
    for path in sorted(glob.glob(os.path.join(root, "kernels", "cuda", "*.cu*"))):
        rel = os.path.relpath(path, root)
        text = open(path).read()
        for name in ["DDPM_LAUNCH", *wrappers(text)]:
            found += [(rel, first, last, kernel) for first, last, kernel in call_spans(text, name)]
    return sorted(found)


def recorded(folder, root):
    """{(file relative to root, line)} of every launch site the emulated tests ran."""
    sites = set()
    for path in glob.glob(os.path.join(folder, "*.txt")):
        for row in open(path):
            m = re.match(r"(.*?):(\d+) ", row)
            if not m:
                continue
            file = m.group(1)
            if os.path.isabs(file):
                file = os.path.relpath(file, root)
            sites.add((os.path.normpath(file), int(m.group(2))))
    return sites


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--clear", action="store_true", help="empty the folder, then exit")
    ap.add_argument("--root", default=ROOT, help="the repository (default: this script's)")
    args = ap.parse_args()
    if args.clear:
        shutil.rmtree(args.folder, ignore_errors=True)
        os.makedirs(args.folder)
        return 0
    sites = recorded(args.folder, args.root)
    if not sites:
        sys.exit(f"launch_coverage: nothing recorded in {args.folder}: run the emulated tests "
                 "with DDPM_LAUNCH_SITES set to it (ctest does)")
    per_file = collections.defaultdict(lambda: [0, 0])
    missed = []
    for file, first, last, kernel in launches(args.root):
        ran = any((file, n) in sites for n in range(first, last + 1))
        per_file[file][0] += ran
        per_file[file][1] += 1
        if not ran:
            missed.append(f"  {file}:{first} {kernel}")
    total = sum(n for _, n in per_file.values())
    print(f"launch coverage: {total - len(missed)} of {total} kernel launches in kernels/cuda "
          "ran under the CPU emulation")
    for file, (r, n) in sorted(per_file.items()):
        print(f"  {file}: {r}/{n}")
    if missed:
        print("launches no emulated test runs (test each against the CPU):\n" + "\n".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
