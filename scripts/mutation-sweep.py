#!/usr/bin/env python3
"""Mutation sweep: do the tests fail when the code is wrong?

For each mutation of a list (tests/mutations/*.json: [file, old text, new text, tests]), the
file's one occurrence of the old text is replaced by the new, the named test binaries (paths
under BUILD/tests/, e.g. test_optim or cuda_emulation/emu_asan_test_diffusion_loss: a CUDA
kernel's mutation runs on the CPU emulation; ":FILTER" after one runs only the tests a gtest
filter names; "ctest:REGEX" runs the ctest tests REGEX names, the command line's: the ddpm
and kernel-bench binaries are built for them; "build:TARGET" builds a ninja target and runs
nothing, for a ctest test whose binary is another, e.g. a gtest binary run with its own
environment) are rebuilt and run, and the mutation is reported CAUGHT (some test failed, or it no longer
builds) or SURVIVED (every test passed: a gap, or a change that is no change); the binaries run in
their listed order and the first that fails decides, so list the quick ones first. The file is
restored after each mutation, on an error or Ctrl-C too. A mutation whose old text no longer
occurs exactly once is reported STALE: update the list with the code.

  scripts/mutation-sweep.py tests/mutations/*.json [--build build] [--only SUBSTRING]

Exit status 1 when any mutation survived or is stale. Each mutation rebuilds what its tests
link (a library and a few binaries): about a minute each on 2 cores. The lists are what
earlier sweeps ran; every mutation in them is CAUGHT by the tests of the commit that added it.
"""
import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def failed_tests(stdout):
    names = []
    for line in stdout.splitlines():
        if "***Failed" in line or "***Timeout" in line or "***Exception" in line:  # ctest's
            names.append(line.split(":", 1)[-1].split()[0])
            continue
        parts = line.split()
        if line.startswith("[  FAILED  ]") and len(parts) > 3 and "." in parts[3]:
            names.append(parts[3].rstrip(","))
    return names


def change_of(old, new, width=60):
    """What the mutation changes: old and new without their common start and end (20
    characters of the start kept for context), each cut to `width`."""
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    keep = max(0, start - 20)
    cut = lambda text: " ".join(text[keep:len(text) - end].split())[:width]
    return f"{cut(old)!r} -> {cut(new)!r}"


def targets_of(test):
    """A test binary under build/tests/ ("test_optim", "cuda_emulation/emu_asan_test_philox"),
    optionally with ":FILTER" (a gtest filter), is built by the ninja target of its file name;
    "ctest:REGEX" (the command line's tests) by the apps'; "build:TARGET" is that target."""
    if test.startswith("ctest:"):
        return ["ddpm", "kernel-bench"]
    if test.startswith("build:"):
        return [test[len("build:"):]]
    return [test.split(":")[0].split("/")[-1]]


def command_of(test, build):
    """What runs a test entry; None for "build:TARGET", which only builds."""
    if test.startswith("build:"):
        return None
    if test.startswith("ctest:"):
        return ["ctest", "--test-dir", build, "-R", test[len("ctest:"):]]
    binary, _, pattern = test.partition(":")
    return [f"{build}/tests/{binary}", "--gtest_brief=1"] + (
        [f"--gtest_filter={pattern}"] if pattern else [])


def sweep(mutation, build):
    path, old, new, tests = mutation
    target = ROOT / path
    source = target.read_text()
    if source.count(old) != 1:
        return "STALE", f"the text occurs {source.count(old)} times"
    target.write_text(source.replace(old, new))
    try:
        made = subprocess.run(["ninja", "-C", build] + [n for t in tests for n in targets_of(t)], cwd=ROOT,
                              capture_output=True, text=True)
        if made.returncode != 0:
            return "CAUGHT", "does not build"
        caught = []
        for test in tests:
            command = command_of(test, build)
            if command is None:
                continue
            run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                 timeout=1200)
            if run.returncode != 0:
                caught.append(f"{test}: {', '.join(failed_tests(run.stdout)[:3]) or 'exit ' + str(run.returncode)}")
                break  # one failing binary decides; the later (list them slowest last) need not run
        return ("CAUGHT", "; ".join(caught)) if caught else ("SURVIVED", "every test passed")
    finally:
        target.write_text(source)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lists", nargs="+", help="JSON lists of [file, old, new, [tests]]")
    parser.add_argument("--build", default="build", help="the build folder (ninja)")
    parser.add_argument("--only", default="", help="only mutations of files containing this")
    args = parser.parse_args()
    mutations = []
    for name in args.lists:
        for m in json.loads(pathlib.Path(name).read_text()):
            if not (isinstance(m, list) and len(m) == 4 and isinstance(m[3], list)):
                sys.exit(f"{name}: each entry must be [file, old, new, [test binaries]], got {m!r}")
            if args.only in m[0]:
                mutations.append((name, m))
    touched = {n for _, m in mutations for test in m[3] for n in targets_of(test)}
    bad = 0
    try:
        for i, (name, m) in enumerate(mutations):
            verdict, why = sweep(m, args.build)
            bad += verdict != "CAUGHT"
            change = change_of(m[1], m[2])
            print(f"[{i + 1}/{len(mutations)}] {verdict:8} {m[0]}: {change}  ({why})", flush=True)
    finally:  # leave the binaries built from the restored sources
        subprocess.run(["ninja", "-C", args.build] + sorted(touched), cwd=ROOT,
                       capture_output=True)
    print(f"{len(mutations) - bad} of {len(mutations)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
