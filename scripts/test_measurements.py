#!/usr/bin/env python3
"""What the tests printed beside their verdicts, from ctest's log of a run.

Many GPU tests print what they measured against their bound ("GPU step vs CPU step (bf16):
... gradients 6.77e-03 (... at down.1.res0.skip.w; bound 2e-02)", "worst output error 0.31
of its bf16 bound", launches and memory per step). ctest shows a test's output only when it
fails; its Testing/Temporary/LastTest.log keeps every test's. This prints each such line
after its test's name, without googletest's own lines, so a GPU run's report shows every
margin, passed or not (scripts/gpu-check.sh).

    scripts/test_measurements.py BUILD/Testing/Temporary/LastTest.log
"""
import re
import sys

# googletest's lines ([ RUN ], [ OK ], the filter note), ctest's separators, blank lines
NOISE = re.compile(r"\[|Note: Google Test filter|-{10,}|\s*$")


def measurements(log_lines):
    name, inside = None, False
    for line in log_lines:
        started = re.match(r"\d+/\d+ Testing: (\S+)", line)
        if started:
            name, inside = started.group(1), False
        elif line.startswith("Output:"):
            inside = True
        elif line.startswith("<end of output>"):
            inside = False
        elif inside and name and not NOISE.match(line):
            yield f"{name}: {line.rstrip()}"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/test_measurements.py BUILD/Testing/Temporary/LastTest.log")
    try:
        log = open(sys.argv[1], errors="replace")
    except OSError as e:
        sys.exit(f"test_measurements: cannot read {sys.argv[1]}: {e.strerror}")
    with log:
        for line in measurements(log):
            print(line)


if __name__ == "__main__":
    main()
