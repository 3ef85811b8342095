#!/usr/bin/env python3
"""Launch coverage: does some emulated test run every kernel of kernels/cuda?

    scripts/launch_coverage.py --clear FOLDER   # empty the folder (before the tests)
    scripts/launch_coverage.py FOLDER           # the report; exit 1 on a kernel not run

The CPU emulation of CUDA (tests/cuda_emulation) appends a line "file:line, executable,
address, name" to FOLDER/<pid>.txt the first time a process runs a kernel from a
DDPM_LAUNCH (runtime.h, note_launch_site, when DDPM_LAUNCH_SITES names FOLDER; ctest sets
it for every emulated test). This script checks two things against those records:
- every DDPM_LAUNCH in kernels/cuda ran (a launch written over several lines counts as run
  when any of its lines is recorded: compilers differ in which line __LINE__ names there; a
  DDPM_LAUNCH inside a macro is a launch at each use of the macro, where __LINE__ points);
- every instantiation of a kernels/cuda kernel (its __global__ name, any template
  arguments) that the recording executables hold ran: their symbols (nm -C) name what the
  recorded addresses ran and what else they hold.
It names each launch and instantiation no test ran. A kernel no test launches is a kernel
no test checks against the CPU, however many tests its file has.
"""
import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
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


def past_closing(text, i, opening="(", closing=")"):
    """The index just past the bracket that closes the one at text[i]."""
    depth = 0
    while True:
        depth += text[i] in opening
        depth -= text[i] in closing
        i += 1
        if depth == 0:
            return i


def kernel_names(root):
    """The names of the __global__ functions of kernels/cuda."""
    names = set()
    for path in glob.glob(os.path.join(root, "kernels", "cuda", "*.cu*")):
        text = open(path).read()
        while "__launch_bounds__(" in text:  # (its arguments may hold parentheses)
            at = text.index("__launch_bounds__(")
            text = text[:at] + text[past_closing(text, at + len("__launch_bounds__")):]
        names.update(re.findall(r"__global__\s+(?:static\s+)?void\s+(\w+)\s*\(", text))
    return names


def parts(symbol):
    """(name, what follows the parameter list) of a demangled function symbol:
    ('ddpm::cuda::x::k<A, B<1> >', '') of 'void ddpm::cuda::x::k<A, B<1> >(long, B<1>)';
    a lambda inside it follows its parameter list."""
    depth = 0
    for i, c in enumerate(symbol):
        depth += c in "<("
        depth -= c in ">)"
        if c == "(" and depth == 1 and not symbol.startswith("(anonymous", i):
            return re.sub(r"^void ", "", symbol[:i]), symbol[past_closing(symbol, i, "<(", ">)"):]
    return symbol, ""


def base_name(name):
    """conv_gemm_bf16 of 'ddpm::cuda::x::conv_gemm_bf16<A, B<1> >'."""
    depth, cut = 0, len(name)
    for i, c in enumerate(name):
        depth += c == "<"
        depth -= c == ">"
        if c == "<" and depth == 1:
            cut = i
            break
    return name[:cut].split("::")[-1]


def short(name):
    """A kernel's name without namespaces."""
    return re.sub(r"\w+::", "", name.replace("(anonymous namespace)::", ""))


def symbols(executable):
    """{address: demangled name} of the functions defined in an executable (nm)."""
    out = subprocess.run(["nm", "-C", "--defined-only", executable], capture_output=True,
                         text=True, check=True).stdout
    table = {}
    for row in out.splitlines():
        fields = row.split(" ", 2)
        if len(fields) == 3 and fields[1] in "tTwW" and "[clone" not in fields[2]:
            table[int(fields[0], 16)] = fields[2]
    return table


def recorded(folder, root):
    """The launch sites the emulated tests ran, {(file relative to root, line)}, and the
    kernels they ran, {(executable, address)}."""
    sites, kernels = set(), set()
    for path in glob.glob(os.path.join(folder, "*.txt")):
        for row in open(path):
            fields = row.rstrip("\n").split("\t")
            m = re.match(r"(.*):(\d+)$", fields[0])
            if len(fields) != 4 or not m:
                continue
            file = m.group(1)
            if os.path.isabs(file):
                file = os.path.relpath(file, root)
            sites.add((os.path.normpath(file), int(m.group(2))))
            kernels.add((fields[1], int(fields[2], 16)))
    return sites, kernels


def site_report(root, sites):
    """The launch sites' lines of the report, and those no test ran."""
    per_file = collections.defaultdict(lambda: [0, 0])
    missed = []
    for file, first, last, kernel in launches(root):
        ran = any((file, n) in sites for n in range(first, last + 1))
        per_file[file][0] += ran
        per_file[file][1] += 1
        if not ran:
            missed.append(f"  {file}:{first} {kernel}")
    total = sum(n for _, n in per_file.values())
    lines = [f"launch coverage: {total - len(missed)} of {total} kernel launches in kernels/cuda "
             "ran under the CPU emulation"]
    lines += [f"  {file}: {r}/{n}" for file, (r, n) in sorted(per_file.items())]
    return lines, missed


def instance_report(root, kernels):
    """The same for every instantiation of a kernels/cuda kernel that the executables
    which recorded hold: those no test ran, by their symbols."""
    names, linked, ran = kernel_names(root), set(), set()
    for executable in sorted({e for e, _ in kernels}):
        if not os.path.exists(executable):
            continue
        table = {a: parts(s) for a, s in symbols(executable).items()}
        linked.update(name for name, rest in table.values()
                      if not rest and name.startswith("ddpm::cuda") and base_name(name) in names)
        ran.update(table[a][0] for e, a in kernels if e == executable and a in table)
    missed = sorted(short(s) for s in linked - ran)
    per_kernel = collections.Counter(base_name(s) for s in linked)
    lines = [f"kernel instantiations: {len(linked) - len(missed)} of {len(linked)} that the "
             f"emulated tests link ran ({len(per_kernel)} kernels)"]
    return lines, [f"  {s}" for s in missed]


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
    sites, kernels = recorded(args.folder, args.root)
    if not sites:
        sys.exit(f"launch_coverage: nothing recorded in {args.folder}: run the emulated tests "
                 "with DDPM_LAUNCH_SITES set to it (ctest does)")
    lines, missed_sites = site_report(args.root, sites)
    more, missed_kernels = instance_report(args.root, kernels)
    print("\n".join(lines + more))
    if missed_sites:
        print("launches no emulated test runs (test each against the CPU):\n" +
              "\n".join(missed_sites))
    if missed_kernels:
        print("kernel instantiations no emulated test runs:\n" + "\n".join(missed_kernels))
    return 1 if missed_sites or missed_kernels else 0


if __name__ == "__main__":
    sys.exit(main())
